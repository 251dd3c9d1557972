"""GPU duty: how much of a GPU worker's wall time goes to the model, on local and S3 storage.

One worker on a GPU queue (`sam3`, concurrency 1) runs one job of N echo items with
`delay_s` (30 ms, standing in for the model) on three storages: the local directory, S3 (moto
in its own process on loopback) and the same S3 behind `bench.latency_proxy` adding 40 ms to
every request (a bucket in another region). Duty = the sum of the items' `model_ms` (the
worker's own clock around the provider call, from the manifest's meta) / the wall time from the
first item's `started_at` (its `running` report) to the last item's `finished_at` (its
`succeeded` report, sent after the manifest is written).

Side by side, on the same storage (same backend classes, same moto, same proxy): a bare loop in
this process that fetches the next input one ahead in a background thread, runs the same
"model" (the sleep, the image decode and copy the echo provider does) and uploads each output
and a small manifest in the background. Its duty is the reference: what a plain pipelined loop
gets from that storage.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from app.storage import LocalStorage, S3Storage, Storage
from bench.common import ROOT, Context, emit, main_for, note, png_bytes, system
from bulkgen_stack.processes import free_port, wait_port

BENCH = "duty"
STORAGES = ("local", "s3_loopback", "s3_40ms")
# Duty targets by storage, in percent; and the floor against the bare loop on the same storage.
TARGETS = {"local": 90.0, "s3_loopback": 90.0, "s3_40ms": 80.0}
RATIO_TARGET = 0.9
BUCKET = "bulkgen-duty"
# A PUT costs two round trips (botocore sends Expect: 100-continue), so an item's uploads take
# ~180 ms at 40 ms: 8 in parallel keep up with an item every ~25 ms, so uploads never bound the loop.
UPLOAD_THREADS = 8

# moto in its own process, quiet: in ours it would share the GIL with the bare loop it serves.
MOTO_SERVER = (
    "import logging, sys, threading; logging.getLogger('werkzeug').setLevel(logging.ERROR); "
    "from moto.server import ThreadedMotoServer; "
    "ThreadedMotoServer(ip_address='127.0.0.1', port=int(sys.argv[1]), verbose=False).start(); "
    "threading.Event().wait()"
)


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--items", type=int, default=None, help="items per run (default 300; 60 with --quick)"
    )
    parser.add_argument("--delay-s", type=float, default=0.03, help="model time per item (echo delay_s)")
    parser.add_argument("--latency-ms", type=float, default=40.0, help="added per request for s3_40ms")
    parser.add_argument(
        "--storages", default=",".join(STORAGES), help=f"comma-separated subset of {','.join(STORAGES)}"
    )
    parser.add_argument("--queue", default="sam3", help="GPU queue the worker serves")
    parser.add_argument("--ahead", type=int, default=1, help="inputs the bare loop fetches ahead")


@dataclass
class Run:
    """One measured run: model seconds summed over items, wall seconds first start to last finish."""

    items: int
    model_s: float
    wall_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def duty(self) -> float:
        return 100.0 * self.model_s / self.wall_s

    @property
    def items_per_s(self) -> float:
        return self.items / self.wall_s


# --- S3 on loopback, with and without latency -----------------------------------------------------


class ProxyProcess:
    """`python -m bench.latency_proxy` as a child: its request counts are read over SIGUSR1."""

    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc, self.url = proc, url

    def take_counts(self) -> dict[str, int]:
        assert self.proc.stdout is not None
        self.proc.send_signal(signal.SIGUSR1)
        return json.loads(self.proc.stdout.readline())["requests"]


@contextlib.contextmanager
def child(argv: list[str], port: int, log: Path, stdout: int | IO[Any] | None = None) -> Iterator[Any]:
    with open(log, "ab") as err:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=stdout or err, stderr=err, text=True)
        try:
            wait_port(port, 30)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def moto_server(root: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    with child([sys.executable, "-c", MOTO_SERVER, str(port)], port, root / "moto.log"):
        note(f"moto S3 on 127.0.0.1:{port}")
        yield f"http://127.0.0.1:{port}", port


@contextlib.contextmanager
def latency_proxy(root: Path, target_port: int, delay_ms: float) -> Iterator[ProxyProcess]:
    port = free_port()
    argv = [sys.executable, "-m", "bench.latency_proxy", "--target", f"127.0.0.1:{target_port}"]
    argv += ["--delay-ms", str(delay_ms), "--port", str(port)]
    with child(argv, port, root / "latency-proxy.log", stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[-1]
        note(f"latency proxy (+{delay_ms:g} ms per request) on {url}")
        yield ProxyProcess(proc, url)


def s3_env(endpoint: str, prefix: str) -> dict[str, str]:
    return {
        "STORAGE_BACKEND": "s3",
        "S3_BUCKET": BUCKET,
        "S3_ENDPOINT_URL": endpoint,
        "S3_REGION": "us-east-1",
        "S3_ACCESS_KEY_ID": "test",
        "S3_SECRET_ACCESS_KEY": "test",
        "S3_PREFIX": prefix,
    }


# --- the system -----------------------------------------------------------------------------------


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def system_duty(items: list[dict[str, Any]]) -> Run:
    """Duty from the items' records: model_ms from the manifest meta, times from the worker's reports."""
    failed = [i["error"] for i in items if i["status"] != "succeeded"]
    if failed:
        raise RuntimeError(f"{len(failed)} items did not succeed: {failed[:3]}")
    ends = [epoch(i["finished_at"]) for i in items]
    # An item whose `running` report lost a race has no started_at: its task began duration_ms before its end.
    starts = [
        epoch(i["started_at"]) if i["started_at"] else epoch(i["finished_at"]) - i["duration_ms"] / 1000
        for i in items
    ]
    model_ms = [float(i["meta"]["model_ms"]) for i in items]
    run = Run(len(items), sum(model_ms) / 1000, max(ends) - min(starts))
    # Where the rest goes: inside an item's task (running -> succeeded, less the model) or between
    # one item's end and the next one's start (one worker: the items follow each other).
    spans = sorted(zip(starts, ends, model_ms, strict=True))
    in_task = [(end - start) * 1000 - model for start, end, model in spans]
    between = [(nxt[0] - cur[1]) * 1000 for cur, nxt in zip(spans, spans[1:], strict=False)]
    run.extra = {
        "model_ms_mean": round(statistics.fmean(model_ms), 2),
        "wall_per_item_ms": round(1000 * run.wall_s / run.items, 2),
        "in_task_not_model_ms_mean": round(statistics.fmean(in_task), 2),
        "between_items_ms_mean": round(statistics.fmean(between), 2) if between else None,
        "without_started_at": sum(1 for i in items if not i["started_at"]),
    }
    return run


def measure_system(
    ctx: Context,
    label: str,
    env: dict[str, str],
    images: list[bytes],
    args: argparse.Namespace,
    proxy: ProxyProcess | None,
) -> Run:
    with system(ctx, f"duty_{label}", workers=("control",), env=env, use_postgres=ctx.pg is not None) as s:
        s.start_worker(args.queue, concurrency=1)
        keys = s.api.upload(images)
        params = {"delay_s": args.delay_s, "queue": args.queue}
        # Warm-up: a fresh worker process's first items pay imports and connections.
        warm = s.api.wait(s.api.submit(keys[:2], params=params)["id"], 120)
        if warm["status"] != "succeeded":
            raise RuntimeError(f"warm-up job {warm['status']}: {s.api.items(warm['id'])[0]['error']}")
        if proxy is not None:
            proxy.take_counts()
        submitted = time.monotonic()
        job = s.api.submit(keys, params=params)
        # Polled slowly: each poll is CPU taken from the two cores the worker runs on.
        s.api.wait(job["id"], timeout=120 + 5 * len(keys), every=0.5)
        elapsed = time.monotonic() - submitted
        counts = proxy.take_counts() if proxy is not None else None
        run = system_duty(s.api.items(job["id"]))
    run.extra["submit_to_done_s"] = round(elapsed, 2)
    if counts is not None:
        run.extra["storage_requests_per_item"] = round(sum(counts.values()) / run.items, 2)
        run.extra["storage_requests"] = counts
    return run


# --- the bare loop --------------------------------------------------------------------------------


def bare_loop(store: Storage, keys: list[str], out_prefix: str, delay_s: float, ahead: int) -> Run:
    """Fetch `ahead` inputs ahead, run the stand-in model, upload output then manifest in the background."""
    from PIL import Image

    workdir = Path(tempfile.mkdtemp(prefix="duty-bare-"))

    def fetch(i: int) -> Path:
        path = workdir / f"in-{i}.png"
        # get_bytes is one GET on S3 (download_to goes through s3transfer): what a plain loop would do.
        path.write_bytes(store.get_bytes(keys[i]))
        return path

    def upload(i: int, out: Path, model_ms: float) -> None:
        prefix = f"{out_prefix}/{i}/"
        store.put_file(prefix + "echo.png", out, "image/png")
        manifest = {
            "outputs": [prefix + "echo.png"],
            "meta": {"model_ms": model_ms},
            "finished_at": time.time(),
        }
        # The manifest last, as the worker writes it: the commit marker of the item.
        store.put_bytes(prefix + "manifest.json", json.dumps(manifest).encode(), "application/json")
        out.unlink()

    model_s = 0.0
    uploads: list[Future[None]] = []
    try:
        with ThreadPoolExecutor(ahead) as fetcher, ThreadPoolExecutor(UPLOAD_THREADS) as uploader:
            started = time.monotonic()
            pending = deque(fetcher.submit(fetch, i) for i in range(min(ahead, len(keys))))
            for i in range(len(keys)):
                path = pending.popleft().result()
                if i + ahead < len(keys):
                    pending.append(fetcher.submit(fetch, i + ahead))
                t = time.monotonic()
                # The echo provider's work: sleep, check the image decodes, copy it as the output.
                time.sleep(delay_s)
                with Image.open(path) as img:
                    img.load()
                out = workdir / f"out-{i}.png"
                shutil.copyfile(path, out)
                took = time.monotonic() - t
                model_s += took
                path.unlink()
                uploads.append(uploader.submit(upload, i, out, round(took * 1000, 3)))
            for f in uploads:
                f.result()
            wall = time.monotonic() - started
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return Run(len(keys), model_s, wall, {"ahead": ahead, "upload_threads": UPLOAD_THREADS})


def measure_bare(
    store: Storage, label: str, images: list[bytes], args: argparse.Namespace, proxy: ProxyProcess | None
) -> Run:
    keys = [f"inputs/duty-bare-{label}-{i}.png" for i in range(len(images))]
    for key, data in zip(keys, images, strict=True):
        store.put_bytes(key, data, "image/png")
    # Warm-up, as for the system: the first requests open connections.
    bare_loop(store, keys[:2], f"outputs/bare-{label}/warmup", args.delay_s, args.ahead)
    if proxy is not None:
        proxy.take_counts()
    run = bare_loop(store, keys, f"outputs/bare-{label}/run", args.delay_s, args.ahead)
    if proxy is not None:
        counts = proxy.take_counts()
        run.extra["storage_requests_per_item"] = round(sum(counts.values()) / run.items, 2)
        run.extra["storage_requests"] = counts
    return run


# --- the comparison -------------------------------------------------------------------------------


def compare(
    ctx: Context,
    label: str,
    images: list[bytes],
    args: argparse.Namespace,
    endpoint: str | None,
    proxy: ProxyProcess | None,
) -> None:
    if endpoint is None:
        store: Storage = LocalStorage(ctx.root / "duty-bare-local", "http://127.0.0.1", "bench")
        env: dict[str, str] = {}
    else:
        store = S3Storage(BUCKET, endpoint, "us-east-1", "test", "test", prefix=f"bare-{label}")
        env = s3_env(endpoint, f"system-{label}")
    note(f"{label}: bare loop, {len(images)} items")
    bare = measure_bare(store, label, images, args, proxy)
    note(f"{label}: system, {len(images)} items on {args.queue}")
    sysrun = measure_system(ctx, label, env, images, args, proxy)
    common = {"items": len(images), "delay_s": args.delay_s}
    target = TARGETS[label]
    emit(
        BENCH,
        f"{label}_system_duty",
        sysrun.duty,
        "%",
        target=f">= {target:g}",
        met=sysrun.duty >= target,
        **common,
        **sysrun.extra,
    )
    emit(BENCH, f"{label}_bare_duty", bare.duty, "%", **common, **bare.extra)
    ratio = sysrun.duty / bare.duty
    emit(
        BENCH, f"{label}_system_vs_bare", ratio, "x", target=f">= {RATIO_TARGET:g}", met=ratio >= RATIO_TARGET
    )
    emit(BENCH, f"{label}_system_items_per_s", sysrun.items_per_s, "items/s", **common)
    emit(BENCH, f"{label}_bare_items_per_s", bare.items_per_s, "items/s", **common)


def run(ctx: Context, args: argparse.Namespace) -> None:
    n = args.items or (60 if ctx.quick else 300)
    chosen = [s for s in args.storages.split(",") if s]
    unknown = set(chosen) - set(STORAGES)
    if unknown:
        raise ValueError(f"unknown storage(s) {sorted(unknown)}; choose from {STORAGES}")
    images = [png_bytes(i) for i in range(n)]
    if "local" in chosen:
        compare(ctx, "local", images, args, None, None)
    if not {"s3_loopback", "s3_40ms"} & set(chosen):
        return
    with moto_server(ctx.root) as (moto_url, moto_port):
        if "s3_loopback" in chosen:
            compare(ctx, "s3_loopback", images, args, moto_url, None)
        if "s3_40ms" in chosen:
            with latency_proxy(ctx.root, moto_port, args.latency_ms) as proxy:
                compare(ctx, "s3_40ms", images, args, proxy.url, proxy)


def main(argv: list[str] | None = None) -> int:
    return main_for(BENCH, add_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
