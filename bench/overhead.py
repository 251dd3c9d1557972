"""Worker overhead: per item, the wall time of a task minus the time inside the model call.

Two views, both from what the product records:
- `overhead_ms`: the manifest's meta (the task's own clock): lease taken -> outputs uploaded,
  minus the provider's run (input download, temp dir, output upload, cancel checks);
- `wall_minus_model_ms`: the item's `finished_at - started_at` (the worker's `running` and
  `succeeded` reports) minus `model_ms`: adds the `running` report, the manifest write and the
  results-backend write.

Measured with the echo provider and the tiny demo WAN and SAM3 models on CPU, one worker
process per queue (models preloaded), items run one at a time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime
from typing import Any

from bench.common import (
    MODEL_CACHE,
    ROOT,
    BenchSystem,
    Context,
    emit,
    main_for,
    note,
    percentile,
    png_bytes,
    system,
)

BENCH = "overhead"
TARGET_MS = 30.0

BUILD_MODELS = (
    "import sys; from providers.demo_models import ensure_demo_wan, ensure_demo_sam3; "
    "ensure_demo_wan(sys.argv[1]); ensure_demo_sam3(sys.argv[1])"
)


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--echo-items", type=int, default=None, help="echo items (default 100; 20 with --quick)"
    )
    parser.add_argument(
        "--model-items", type=int, default=None, help="WAN and SAM3 items (default 5; 2 with --quick)"
    )
    parser.add_argument("--no-models", action="store_true", help="echo only (no torch needed)")


def wait_loaded(s: BenchSystem, name: str, provider: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = s.stack.procs[name].log()
        if f"loaded provider {provider}" in log:
            return
        if "could not preload provider" in log:
            raise RuntimeError(f"{name} could not load {provider}:\n{log[-3000:]}")
        time.sleep(0.5)
    raise TimeoutError(f"{name} did not load {provider} in {timeout} s")


def measure(s: BenchSystem, label: str, provider: str, keys: list[str], **fields: Any) -> None:
    job = s.api.submit(keys, provider=provider, **fields)
    done = s.api.wait(job["id"], timeout=600 + 60 * len(keys), every=0.5)
    items = s.api.items(job["id"])
    failed = [i["error"] for i in items if i["status"] != "succeeded"]
    if failed:
        raise RuntimeError(f"{label}: {done['status']}: {failed[:3]}")
    in_task = [float(i["meta"]["overhead_ms"]) for i in items]
    model = [float(i["meta"]["model_ms"]) for i in items]
    # An item whose `running` report lost a race (see docs/benchmarks.md) has no started_at.
    timed = [i for i in items if i["started_at"] and i["finished_at"]]
    wall = [
        (
            datetime.fromisoformat(i["finished_at"]).timestamp()
            - datetime.fromisoformat(i["started_at"]).timestamp()
        )
        * 1000
        - float(i["meta"]["model_ms"])
        for i in timed
    ]
    extra = {"items": len(items), "model_ms_p50": round(statistics.median(model), 1)}
    mean_wall = statistics.fmean(wall)
    emit(BENCH, f"{label}_overhead_ms_mean", statistics.fmean(in_task), "ms", **extra)
    emit(
        BENCH,
        f"{label}_wall_minus_model_ms_mean",
        mean_wall,
        "ms",
        target=f"< {TARGET_MS:g}",
        met=mean_wall < TARGET_MS,
        p50=round(percentile(wall, 50), 1),
        p95=round(percentile(wall, 95), 1),
        without_started_at=len(items) - len(timed),
        **extra,
    )


def run(ctx: Context, args: argparse.Namespace) -> None:
    n_echo = args.echo_items or (20 if ctx.quick else 100)
    n_model = args.model_items or (2 if ctx.quick else 5)
    models = not args.no_models
    if models:
        started = time.monotonic()
        MODEL_CACHE.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        subprocess.run([sys.executable, "-c", BUILD_MODELS, str(MODEL_CACHE)], check=True, cwd=ROOT, env=env)
        note(f"demo models ready in {time.monotonic() - started:.1f} s")
    with system(ctx, "overhead", workers=("control",), use_postgres=ctx.pg is not None) as s:
        preload = {"PRELOAD_MODELS": "1" if models else "0"}
        s.start_worker("wan_local", concurrency=1, extra_env=preload)
        if models:
            s.start_worker("sam3", concurrency=1, extra_env=preload)
            wait_loaded(s, "wan_local", "wan_local")
            wait_loaded(s, "sam3", "sam3")
        keys = s.api.upload([png_bytes(i) for i in range(max(n_echo, n_model))])
        # Warm-up: first calls in a fresh process (imports, connections) are not what an item costs.
        s.api.wait(s.api.submit(keys[:2], params={"queue": "wan_local"})["id"], 120)
        note(f"echo: {n_echo} items")
        measure(s, "echo", "echo", keys[:n_echo], params={"queue": "wan_local"})
        if models:
            note(f"WAN demo: {n_model} items")
            measure(s, "wan_demo", "wan_local", keys[:n_model], prompt="a cat walks", params={"seed": 1})
            note(f"SAM3 demo: {n_model} items")
            measure(s, "sam3_demo", "sam3", keys[:n_model], prompts=["cat"])


def main(argv: list[str] | None = None) -> int:
    return main_for(BENCH, add_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
