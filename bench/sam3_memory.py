"""SAM3 peak memory against the number of concepts: the real-size model on CPU, one image.

Builds SAM3 at its real default config (`Sam3Config()`, 840 M parameters, random weights) once
under var/realsize (REALSIZE_MODEL_DIR moves it; the real-size test tier shares it), then runs the provider's own path (`Sam3Provider.run`
on a 1200x900 image) once per concept count, each in a fresh child process, and prints a markdown
table: the child's peak RSS (its `ru_maxrss`, read by the parent with `wait4`), the size of the
model's weights (memory-mapped from the checkpoint and paged in as the run reads them, so they
count in RSS), what the run needed beyond them, and the wall time of the run.

    python -m bench.sam3_memory                      # 1 and 8 concepts, the checked-out provider
    python -m bench.sam3_memory --baseline old_sam3.py    # and an earlier copy of providers/sam3.py

`--baseline` (or `--provider-file`, in place of the checked-out one) loads another copy of
`providers/sam3.py`, for instance an earlier revision taken from git, so a change is measured
against what it replaced on the same machine in the same run.

Random weights score instances at random: the counts kept (score above 0.5) are printed beside
the figures, since the masks painted per instance are part of what a concept costs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Distinct everyday concepts; a run with n concepts takes the first n.
CONCEPTS = ["person", "car", "tree", "dog", "bicycle", "building", "sky", "road", "cat", "bench"]
WIDTH, HEIGHT = 1200, 900


def build(root: Path) -> str:
    """The real-size SAM3 under `root`: built once by the shared builder, reused when present."""
    from providers.demo_models import ensure_realsize_sam3

    return ensure_realsize_sam3(root)


def load_provider_class(provider_file: str | None) -> Any:
    if provider_file is None:
        from providers.sam3 import Sam3Provider

        return Sam3Provider
    spec = importlib.util.spec_from_file_location("sam3_under_test", provider_file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.Sam3Provider


def child(args: argparse.Namespace) -> None:
    """One provider run in this (fresh) process; prints one JSON line of facts."""
    import numpy as np
    from PIL import Image

    from providers.base import RunContext

    provider_class = load_provider_class(args.provider_file)
    with tempfile.TemporaryDirectory(prefix="sam3-memory-") as tmp:
        work = Path(tmp)
        rng = np.random.default_rng(0)
        pixels = (rng.random((HEIGHT, WIDTH, 3)) * 255).astype(np.uint8)
        pixels[200:600, 300:800] = (200, 60, 40)
        image_path = work / "input.png"
        Image.fromarray(pixels).save(image_path)
        outdir = work / "out"
        outdir.mkdir()

        started = time.monotonic()
        provider = provider_class(args.model_dir)
        provider.load("cpu")
        load_s = time.monotonic() - started
        model = provider._model
        weights = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])

        params = {} if args.score_threshold is None else {"score_threshold": args.score_threshold}
        spec = provider.validate(None, None, CONCEPTS[: args.concepts], params)
        ctx = RunContext(
            item_id="bench",
            attempt=1,
            workdir=outdir,
            report_progress=lambda fraction, message: None,
            check_cancelled=lambda: None,
            remember=lambda key, value: None,
            recall=lambda key: None,
        )
        started = time.monotonic()
        result = provider.run(image_path, spec, ctx)
        run_s = time.monotonic() - started
    print(
        json.dumps(
            {
                "load_s": round(load_s, 1),
                "run_s": round(run_s, 1),
                "weights": weights,
                "self_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "instances": result.meta["instances"],
                "inference_ms": result.meta["inference_ms"],
            }
        )
    )


def measure(args: argparse.Namespace, provider_file: str | None, concepts: int) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.sam3_memory", "--child", "--concepts", str(concepts)]
    command += ["--model-dir", args.model_dir]
    if provider_file:
        command += ["--provider-file", provider_file]
    if args.score_threshold is not None:
        command += ["--score-threshold", str(args.score_threshold)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    started = time.monotonic()
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    # wait4 gives this child's own resource usage (RUSAGE_CHILDREN would be the most of all children).
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall_s = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"child with {concepts} concepts failed (exit {proc.returncode})")
    facts = json.loads(out.strip().splitlines()[-1])
    return {"concepts": concepts, "peak_rss": usage.ru_maxrss * 1024, "wall_s": round(wall_s, 1), **facts}


def table(rows: list[dict[str, Any]]) -> str:
    gb = 1024**3
    lines = [
        "| code | concepts | instances kept | peak RSS (GiB) | weights (GiB) | peak - weights (GiB) "
        "| run (s) | child wall (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['label']} | {r['concepts']} | {r['instances']} | {r['peak_rss'] / gb:.2f} "
            f"| {r['weights'] / gb:.2f} | {(r['peak_rss'] - r['weights']) / gb:.2f} "
            f"| {r['run_s']} | {r['wall_s']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sam3_memory", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model-root",
        type=Path,
        default=Path(os.environ.get("REALSIZE_MODEL_DIR") or ROOT / "var" / "realsize"),
        help="where the real-size models are built and kept",
    )
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 8], help="concept counts to run")
    parser.add_argument("--provider-file", help="another copy of providers/sam3.py to measure instead")
    parser.add_argument("--label", default="checked-out", help="name of the code measured, for the table")
    parser.add_argument(
        "--baseline", metavar="FILE", help="also measure this copy of providers/sam3.py first (as 'baseline')"
    )
    parser.add_argument(
        "--score-threshold", type=float, help="the job's score_threshold (default: the provider's, 0.5)"
    )
    parser.add_argument("--json", action="store_true", help="also print each row as a JSON line")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--build", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--concepts", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.provider_file:
        args.provider_file = str(Path(args.provider_file).resolve())
    runs = [(args.label, args.provider_file)]
    if args.baseline:
        runs.insert(0, ("baseline", str(Path(args.baseline).resolve())))
    if args.child:
        child(args)
        return 0
    if args.build:
        print(build(args.model_root))
        return 0
    # Built (or found) in its own process, so this one stays small while the children are measured.
    found = subprocess.run(
        [sys.executable, "-m", "bench.sam3_memory", "--build", "--model-root", str(args.model_root)],
        cwd=ROOT,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    args.model_dir = found.stdout.strip().splitlines()[-1]
    if not all(1 <= n <= len(CONCEPTS) for n in args.counts):
        raise SystemExit(f"concept counts run from 1 to {len(CONCEPTS)}")
    rows = []
    for label, provider_file in runs:
        for n in args.counts:
            rows.append({"label": label, **measure(args, provider_file, n)})
            if args.json:
                print(json.dumps(rows[-1]), flush=True)
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
