"""GPU benchmark: real-size SAM3 and Wan 2.2 (random weights) through the product's own workers.

    python -m bench.gpu --out docs/benchmarks.md    # a GPU host (sized for < 8 minutes on one H200)
    python -m bench.gpu --tiny                      # tiny models on CPU, a smoke run (CI)

What it does, unattended and offline (models are built here, nothing is downloaded):

1. Builds, each in a child process so this process never holds GPU memory: SAM3 at its published
   configuration (840 M parameters) and Wan 2.2 TI2V-5B at its published size (5 B transformer,
   Wan 2.2 VAE, UMT5-XXL text encoder), random weights (`providers.demo_models`), into
   `--models-dir` (var/realsize, kept: a second run reuses them). With `--a14b`, also Wan 2.2
   I2V A14B (two 14 B transformers) when the disk and the GPU have room for it.
2. Starts a system (`bench.common`: web, control worker) and one GPU worker at a time with the
   normal worker command (`celery -A tasks worker -Q sam3`, `-Q wan_local`, via `bulkgen_stack`),
   pinned to one GPU (CUDA_VISIBLE_DEVICES), models preloaded, SAM3_MODEL / WAN_MODEL pointing at
   the built models, and submits jobs through the HTTP API.
3. Records: the worker's model load time (its own log line) and start-to-ready time; SAM3 images
   per second at batch 1 and at the micro-batch size (WORKER_BATCH_SIZE); WAN seconds per video at
   480p and 720p x 81 frames for 1 step and `--wan-steps` steps (so the fixed part, text encoder,
   VAE encode and decode, is told apart from the per-step part; the 50-step figure is that line
   extended); peak GPU memory (nvidia-smi, the whole GPU, sampled every 0.25 s while the worker
   runs: weights, activations, CUDA context and allocator cache) and the worker's peak RSS.
4. Prints JSON lines and a table (as every benchmark), then a markdown section, also written to
   `--out`: replacing an earlier section between this script's markers, else appended.

A time guard keeps the run unattended: once `--deadline-s` have passed, the remaining WAN runs are
skipped and listed as skipped. `--tiny` runs every step with the tiny demo models on CPU and very
short runs, so this script is exercised in CI (tests/bench/test_gpu_bench.py) and cannot rot.
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import ROOT, BenchSystem, Context, context, emit, note, system, table
from providers.demo_models import built_facts

BENCH = "gpu"
GIB = 1 << 30
START = "<!-- bench/gpu.py: start -->"
END = "<!-- bench/gpu.py: end -->"
# The worker's own log lines (tasks/lanes.py).
LOADED = re.compile(r"loaded provider (\w+) on (\S+) in ([\d.]+) s")
LANE = re.compile(r"lane \d+ on (\S+) is (ready|broken)(.*)")
CONCEPTS = ["person", "car", "dog"]
PROMPT = "a slow pan across a city street at dusk, people walking, cars passing"
# Wan 2.2 I2V A14B's parameters: two 14.3 B experts, UMT5-XXL (5.7 B), the Wan 2.1 VAE; counted on
# the meta device from providers.demo_models' configurations.
A14B_PARAMS = 2 * 14_288_901_184 + 5_680_910_336 + 126_892_531


@dataclass(frozen=True)
class Sizes:
    """What one run measures: the default (a GPU) or --tiny (CPU, seconds)."""

    sam3_images: int
    sam3_batch: int
    image_size: tuple[int, int]
    wan_resolutions: tuple[str, ...]
    wan_frames: int
    wan_input: tuple[int, int]
    worker_ready_s: float
    job_timeout_s: float


GPU_SIZES = Sizes(
    sam3_images=48,
    # The SAM3 provider's largest micro-batch (Sam3Provider.max_batch).
    sam3_batch=8,
    image_size=(1280, 960),
    wan_resolutions=("480p", "720p"),
    wan_frames=81,
    # 832x480: 480p's own shape, so the video shows all of the input at 480p.
    wan_input=(832, 480),
    worker_ready_s=600,
    job_timeout_s=600,
)
TINY_SIZES = Sizes(
    sam3_images=6,
    sam3_batch=3,
    image_size=(96, 72),
    wan_resolutions=("demo",),
    wan_frames=9,
    wan_input=(80, 48),
    worker_ready_s=300,
    job_timeout_s=300,
)


@dataclass
class Section:
    """Rows of the markdown section, in order, and what was skipped and why."""

    rows: list[tuple[str, str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, model: str, figure: str, value: str, how: str = "") -> None:
        self.rows.append((model, figure, value, how))


# --- the GPU and the worker's memory --------------------------------------------------------------


def gpus() -> list[dict[str, str]]:
    """The GPUs nvidia-smi lists (index, name, total memory); [] without one. Does not touch CUDA."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    found = []
    for line in out.strip().splitlines():
        index, name, total = (part.strip() for part in line.split(","))
        found.append({"index": index, "name": name, "total_mib": total})
    return found


def gpu_used_mib(index: str) -> float | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", index],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        return float(out.strip().splitlines()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


class MemoryPeak:
    """The highest GPU memory in use (nvidia-smi) while it is open; None without a GPU."""

    def __init__(self, gpu: str | None, every_s: float = 0.25) -> None:
        self.gpu, self.every_s = gpu, every_s
        self.gpu_mib: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="gpu-memory", daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self.gpu is not None:
                used = gpu_used_mib(self.gpu)
                if used is not None:
                    self.gpu_mib = max(self.gpu_mib or 0.0, used)
            self._stop.wait(self.every_s)

    def __enter__(self) -> MemoryPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def peak_rss_gib(pid: int) -> float | None:
    """A process's peak resident memory since it started (its own high-water mark, VmHWM)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / GIB
    except OSError:
        return None
    return None


def gib(mib: float | None) -> str:
    return "-" if mib is None else f"{mib / 1024:.1f} GiB"


def secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


# --- models ---------------------------------------------------------------------------------------


def build(kind: str, models_dir: Path, tiny: bool, device: str) -> tuple[str, float, dict[str, Any]]:
    """Build (or reuse) one model in a child process; returns (path, seconds, its recorded facts)."""
    started = time.monotonic()
    argv = [sys.executable, "-m", "bench.gpu", "--build", kind, "--models-dir", str(models_dir)]
    argv += ["--build-device", device] + (["--tiny"] if tiny else [])
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"building {kind} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    path = done.stdout.strip().splitlines()[-1]
    return path, time.monotonic() - started, built_facts(path)


def build_in_this_process(kind: str, models_dir: Path, tiny: bool, device: str) -> str:
    from providers import demo_models

    if tiny:
        if kind == "sam3":
            return demo_models.ensure_demo_sam3(models_dir)
        return demo_models.ensure_demo_wan(models_dir, {"ti2v": "ti2v", "a14b": "wan2.2"}[kind])
    if kind == "sam3":
        return demo_models.ensure_realsize_sam3(models_dir, device=device)
    layout = {"ti2v": "ti2v", "a14b": "wan2.2"}[kind]
    return demo_models.ensure_realsize_wan(models_dir, layout, text_encoder="umt5-xxl", device=device)


def a14b_room(models_dir: Path, gpu: dict[str, str] | None) -> str | None:
    """Why A14B cannot run here (disk for its bf16 weights, GPU memory to hold them without
    offloading), or None when it can."""
    need = 2 * A14B_PARAMS + 1 * GIB
    free = shutil.disk_usage(models_dir).free
    if free < need:
        return f"needs {need / GIB:.0f} GiB of disk for its weights, {free / GIB:.0f} GiB free"
    if gpu is not None and float(gpu["total_mib"]) * (1 << 20) < need + 16 * GIB:
        want, has = (need + 16 * GIB) / GIB, gib(float(gpu["total_mib"]))
        return f"needs about {want:.0f} GiB of GPU memory without offloading; {gpu['name']} has {has}"
    return None


# --- images ---------------------------------------------------------------------------------------


def picture(i: int, size: tuple[int, int]) -> bytes:
    """A distinct PNG with photo-like structure (a gradient, shapes), small on the wire."""
    from PIL import Image, ImageDraw

    width, height = size
    img = Image.linear_gradient("L").resize(size).convert("RGB")
    draw = ImageDraw.Draw(img)
    for k in range(6):
        x, y = (i * 97 + k * 211) % width, (i * 53 + k * 131) % height
        colour = ((i * 40 + k * 70) % 256, (i * 90 + k * 30) % 256, (k * 60 + i * 15) % 256)
        shape = (x, y, x + width // 4, y + height // 4)
        (draw.ellipse if k % 2 else draw.rectangle)(shape, fill=colour)
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=False)
    return buf.getvalue()


# --- workers --------------------------------------------------------------------------------------


_WORKER_SEQ = itertools.count(1)


@dataclass
class Worker:
    name: str
    pid: int
    ready_s: float
    load_s: float | None
    device: str


def start_worker(s: BenchSystem, queue: str, env: dict[str, str], timeout: float) -> Worker:
    """The normal worker command for `queue`, models preloaded; returns once its lane is ready."""
    # A fresh name (and so a fresh log file) per start: an earlier worker's lines must not count.
    name = f"{queue}-{next(_WORKER_SEQ)}"
    started = time.monotonic()
    proc = s.stack.start_worker(queue, name=name, extra_env={"PRELOAD_MODELS": "1", **env})
    deadline = started + timeout
    while time.monotonic() < deadline:
        log = proc.log()
        lane = LANE.search(log)
        if lane and lane.group(2) == "broken":
            raise RuntimeError(f"worker {name} could not load its model{lane.group(3)}\n{log[-3000:]}")
        if lane:
            # Providers are named after their queues (sam3, wan_local).
            loaded = [m for m in LOADED.finditer(log) if m.group(1) == queue]
            load_s = float(loaded[-1].group(3)) if loaded else None
            return Worker(name, proc.pid, time.monotonic() - started, load_s, lane.group(1))
        if not proc.alive():
            raise RuntimeError(f"worker {name} exited:\n{log[-3000:]}")
        time.sleep(0.25)
    raise TimeoutError(f"worker {name} not ready after {timeout:.0f} s:\n{proc.log()[-3000:]}")


def stop_worker(s: BenchSystem, worker: Worker) -> None:
    s.stack.stop(worker.name)


def finished_items(s: BenchSystem, job_id: str, timeout: float) -> list[dict[str, Any]]:
    job = s.api.wait(job_id, timeout=timeout, every=0.5)
    items = s.api.items(job_id)
    failed = [i.get("error") for i in items if i["status"] != "succeeded"]
    if failed:
        raise RuntimeError(f"job {job_id} {job['status']}: {failed[:3]}")
    return items


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def span_s(items: list[dict[str, Any]]) -> float:
    """First start to last finish, from the worker's own reports."""
    starts = [
        epoch(i["started_at"]) if i["started_at"] else epoch(i["finished_at"]) - i["duration_ms"] / 1000
        for i in items
    ]
    return max(epoch(i["finished_at"]) for i in items) - min(starts)


# --- SAM3 -----------------------------------------------------------------------------------------


def bench_sam3(s: BenchSystem, sizes: Sizes, gpu: str | None, env: dict[str, str], out: Section) -> None:
    images = [picture(i, sizes.image_size) for i in range(sizes.sam3_images + sizes.sam3_batch)]
    keys = s.api.upload(images)
    warm, timed = keys[: sizes.sam3_batch], keys[sizes.sam3_batch :]
    width, height = sizes.image_size
    for batch in (1, sizes.sam3_batch):
        worker = start_worker(s, "sam3", {**env, "WORKER_BATCH_SIZE": str(batch)}, sizes.worker_ready_s)
        try:
            with MemoryPeak(gpu) as peak:
                # Warm-up: a fresh process's first passes pay kernel selection and allocator growth.
                finished_items(
                    s, s.api.submit(warm, provider="sam3", prompts=CONCEPTS)["id"], sizes.job_timeout_s
                )
                job = s.api.submit(timed, provider="sam3", prompts=CONCEPTS)
                items = finished_items(s, job["id"], sizes.job_timeout_s)
            wall = span_s(items)
            per_s = len(items) / wall
            model_ms = statistics.fmean(float(i["meta"]["model_ms"]) for i in items)
            batches = statistics.fmean(float(i["meta"].get("batch_size", 1)) for i in items)
            instances = statistics.fmean(float(i["meta"].get("instances", 0)) for i in items)
            common = {
                "images": len(items),
                "batch": batch,
                "size": f"{width}x{height}",
                "concepts": len(CONCEPTS),
            }
            emit(BENCH, f"sam3_images_per_s_batch{batch}", per_s, "images/s", **common, mean_batch=batches)
            emit(BENCH, f"sam3_model_ms_batch{batch}", model_ms, "ms", **common)
            label = "batch 1" if batch == 1 else f"micro-batch {batch} (WORKER_BATCH_SIZE)"
            out.add(
                "SAM3",
                f"images/s, {label}",
                f"{per_s:.2f}",
                f"{len(items)} images {width}x{height}, {len(CONCEPTS)} concepts each; mean batch "
                f"{batches:.1f}; model {model_ms:.0f} ms/image; {instances:.0f} instances/image",
            )
            if batch == 1:
                emit(BENCH, "sam3_load_s", worker.load_s, "s", device=worker.device)
                emit(BENCH, "sam3_worker_ready_s", worker.ready_s, "s")
                out.add(
                    "SAM3",
                    "load time",
                    secs(worker.load_s),
                    "from_pretrained + to device, the worker's log",
                )
                out.add("SAM3", "worker start to ready", secs(worker.ready_s), "process start, imports, load")
            emit(BENCH, f"sam3_peak_gpu_batch{batch}", peak.gpu_mib, "MiB")
            rss = peak_rss_gib(worker.pid)
            emit(BENCH, f"sam3_peak_rss_batch{batch}", rss, "GiB")
            out.add("SAM3", f"worker peak RSS, {label}", "-" if rss is None else f"{rss:.1f} GiB", "VmHWM")
            out.add("SAM3", f"peak GPU memory, {label}", gib(peak.gpu_mib), "nvidia-smi, whole GPU")
        finally:
            stop_worker(s, worker)


# --- WAN ------------------------------------------------------------------------------------------


def bench_wan(
    s: BenchSystem,
    kind: str,
    label: str,
    sizes: Sizes,
    steps: int,
    gpu: str | None,
    env: dict[str, str],
    deadline: float,
    out: Section,
) -> None:
    key = s.api.upload([picture(1000, sizes.wan_input)])[0]
    worker = start_worker(s, "wan_local", env, sizes.worker_ready_s)
    slug = f"wan_{kind}"
    try:
        emit(BENCH, f"{slug}_load_s", worker.load_s, "s", device=worker.device)
        emit(BENCH, f"{slug}_worker_ready_s", worker.ready_s, "s")
        out.add(label, "load time", secs(worker.load_s), "from_pretrained + to device, the worker's log")
        out.add(label, "worker start to ready", secs(worker.ready_s), "process start, imports, load")
        # Warm-up at the smallest size: kernel selection and allocator growth stay out of the figures.
        first = sizes.wan_resolutions[0]
        warm = {"resolution": first, "num_frames": 5, "steps": 1, "seed": 1}
        finished_items(
            s,
            s.api.submit([key], provider="wan_local", prompt=PROMPT, params=warm)["id"],
            sizes.job_timeout_s,
        )
        for resolution in sizes.wan_resolutions:
            seconds: dict[int, float] = {}
            with MemoryPeak(gpu) as peak:
                for n in (1, steps):
                    if time.monotonic() > deadline:
                        what = f"{label} {resolution} x {sizes.wan_frames} frames, {n} steps"
                        out.notes.append(f"{what}: skipped (time guard, --deadline-s)")
                        continue
                    params = {"resolution": resolution, "num_frames": sizes.wan_frames, "steps": n, "seed": 7}
                    job = s.api.submit([key], provider="wan_local", prompt=PROMPT, params=params)
                    (item,) = finished_items(s, job["id"], sizes.job_timeout_s)
                    meta = item["meta"]
                    seconds[n] = float(meta["model_ms"]) / 1000
                    shape = f"{meta['width']}x{meta['height']}x{meta['num_frames']}"
                    # The provider may turn on memory savers (offload, VAE tiling) by itself: say so.
                    savers = ", ".join(meta.get("memory_savers") or []) or "none"
                    emit(
                        BENCH,
                        f"{slug}_{resolution}_s_per_video_{n}steps",
                        seconds[n],
                        "s",
                        shape=shape,
                        memory_savers=savers,
                    )
                    out.add(
                        label,
                        f"{resolution} x {sizes.wan_frames} frames, {n} step{'s' if n > 1 else ''}",
                        f"{seconds[n]:.1f} s/video",
                        f"{shape}; the item's model time; memory savers: {savers}",
                    )
            if len(seconds) == 2 and steps > 1:
                per_step = (seconds[steps] - seconds[1]) / (steps - 1)
                fixed = seconds[1] - per_step
                emit(BENCH, f"{slug}_{resolution}_s_per_step", per_step, "s")
                emit(BENCH, f"{slug}_{resolution}_s_fixed", fixed, "s")
                out.add(
                    label,
                    f"{resolution}: per step / fixed / est. 50 steps",
                    f"{per_step:.2f} s / {fixed:.1f} s / {fixed + 50 * per_step:.0f} s",
                    "from the 1- and N-step runs (fixed: text encoder, VAE encode and decode, mp4)",
                )
            emit(BENCH, f"{slug}_{resolution}_peak_gpu", peak.gpu_mib, "MiB")
            out.add(label, f"peak GPU memory, {resolution}", gib(peak.gpu_mib), "nvidia-smi, whole GPU")
        rss = peak_rss_gib(worker.pid)
        emit(BENCH, f"{slug}_peak_rss", rss, "GiB")
        out.add(label, "worker peak RSS", "-" if rss is None else f"{rss:.1f} GiB", "VmHWM, load included")
    finally:
        stop_worker(s, worker)


# --- the run --------------------------------------------------------------------------------------


def markdown(section: Section, header: str, facts: list[str]) -> str:
    lines = [START, header, "", *facts, "", "| model | figure | value | how |", "|---|---|---|---|"]
    lines += [f"| {m} | {f} | {v} | {h} |" for m, f, v, h in section.rows]
    if section.notes:
        lines += ["", *[f"- {n}" for n in section.notes]]
    return "\n".join([*lines, END, ""])


def write_section(path: Path, text: str) -> None:
    """Replace this script's earlier section in `path`, else append it."""
    old = path.read_text() if path.exists() else ""
    if START in old and END in old:
        head, rest = old.split(START, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        new = head + text + tail
    else:
        new = old + ("\n" if old and not old.endswith("\n\n") else "") + text
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)


def run(ctx: Context, args: argparse.Namespace, sizes: Sizes, gpu: dict[str, str] | None) -> str:
    started = time.monotonic()
    deadline = started + args.deadline_s
    section = Section()
    device = "cuda" if gpu is not None else "cpu"
    models_dir = Path(args.models_dir).resolve()
    gpu_index = gpu["index"] if gpu is not None else None
    # Pinned, as a GPU host runs one worker per GPU: the worker sees this GPU only.
    pin = {"CUDA_VISIBLE_DEVICES": gpu_index} if gpu_index is not None else {}
    built: dict[str, tuple[str, float, dict[str, Any]]] = {}
    wanted = ["sam3", "ti2v"]
    skip_a14b = None if args.tiny else (a14b_room(models_dir, gpu) if args.a14b else "not asked (--a14b)")
    if skip_a14b is None:
        wanted.append("a14b")
    else:
        section.notes.append(f"Wan 2.2 I2V A14B: skipped, {skip_a14b}")
    for kind in wanted:
        note(f"building {kind} ({'tiny' if args.tiny else 'real size'}) on {device}")
        built[kind] = build(kind, models_dir, args.tiny, device)
        note(f"{kind}: {built[kind][0]} in {built[kind][1]:.1f} s")
    env = {"SAM3_MODEL": built["sam3"][0], "WAN_MODEL": built["ti2v"][0], "HF_HUB_OFFLINE": "1"}
    with system(ctx, "gpu", workers=("control",), env=env, use_postgres=ctx.pg is not None) as s:
        note("SAM3")
        bench_sam3(s, sizes, gpu_index, pin, section)
        names = {"ti2v": "WAN TI2V-5B", "a14b": "WAN I2V A14B"}
        for kind in ("ti2v", "a14b"):
            if kind not in built:
                continue
            if kind != "ti2v":
                # The web host validates parameters against the configured model: restart it with this one.
                s.stack.env["WAN_MODEL"] = built[kind][0]
                s.stack.stop("web")
                s.stack.start_web()
            note(names[kind])
            wan_env = {**pin, "WAN_MODEL": built[kind][0]}
            bench_wan(s, kind, names[kind], sizes, args.wan_steps, gpu_index, wan_env, deadline, section)
    facts = [
        f"- Device: {gpu['name']} ({gib(float(gpu['total_mib']))}), one worker process pinned to it"
        if gpu
        else "- Device: CPU (`--tiny`: tiny demo models, a smoke run; its figures say nothing about speed)",
        "- Models (random weights, built here from the published configurations; stand-in tokenizers): "
        + "; ".join(
            f"{kind} {_params(recorded)}, built in {recorded['built_s']:.0f} s"
            for kind, (_, _, recorded) in built.items()
        ),
        f"- Whole run: {time.monotonic() - started:.0f} s. Command: `{command(args.argv)}`",
    ]
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return markdown(section, f"### GPU figures: bench/gpu.py, {when}", facts)


def command(argv: list[str]) -> str:
    """The command line as run, without the options that name this host's paths."""
    shown, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--out", "--models-dir"):
            skip = True
        elif not arg.startswith(("--out=", "--models-dir=")) and arg != "--keep":
            shown.append(arg)
    return " ".join(["python -m bench.gpu", *shown])


def _params(facts: dict[str, Any]) -> str:
    params = facts.get("params")
    if not params:
        return "(tiny demo)"
    return "(" + ", ".join(f"{k} {v / 1e9:.2f} B" for k, v in params.items()) + ")"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny demo models on CPU, very short runs (CI)")
    parser.add_argument("--out", help="markdown file to write the section into (replaced between markers)")
    parser.add_argument(
        "--models-dir", default=str(ROOT / "var" / "realsize"), help="built models, kept between runs"
    )
    parser.add_argument(
        "--wan-steps",
        type=int,
        default=None,
        help="denoising steps of the longer WAN runs (default 10; 2 with --tiny)",
    )
    parser.add_argument(
        "--a14b", action="store_true", help="also Wan 2.2 I2V A14B, if disk and GPU memory allow"
    )
    parser.add_argument(
        "--deadline-s", type=float, default=None, help="skip the remaining WAN runs after this (default 390)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (logs)")
    parser.add_argument("--build", choices=("sam3", "ti2v", "a14b"), help=argparse.SUPPRESS)
    parser.add_argument("--build-device", default="cpu", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.build:
        print(build_in_this_process(args.build, Path(args.models_dir), args.tiny, args.build_device))
        return 0
    args.wan_steps = args.wan_steps or (2 if args.tiny else 10)
    args.deadline_s = args.deadline_s or (1800 if args.tiny else 390)
    found = gpus()
    # CUDA_VISIBLE_DEVICES, when set, says which GPU this run may use (nvidia-smi ignores it).
    allowed = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    found = [g for g in found if not allowed or g["index"] == allowed[0]]
    if not args.tiny and not found:
        parser.error("no GPU found (nvidia-smi): run on a GPU host, or --tiny for the CPU smoke run")
    gpu = None if args.tiny else found[0]
    sizes = TINY_SIZES if args.tiny else GPU_SIZES
    with context(quick=args.tiny, keep=args.keep) as ctx:
        text = run(ctx, args, sizes, gpu)
    print()
    print(table())
    print()
    print(text)
    if args.out:
        write_section(Path(args.out), text)
        note(f"section written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
