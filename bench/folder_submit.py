"""A folder as one job: `POST /api/v1/jobs` with `inputs_prefix` over 100,000 images.

Measures how long the API takes to accept the job (it lists the folder from storage a page at a
time and inserts the items in batches, one statement per page), the rate of item rows written,
how long until the first item runs on a worker, and what the broker holds meanwhile (the
scheduler's window, not the folder). A second run adds a prompts file with a row per image.

The images are written straight into the local storage's directory (what a synced bucket
holds); their content is never read by the API (the workers check each image as they run it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import redis

from bench.bulk_submit import depth
from bench.common import BenchSystem, Context, emit, main_for, note, png_bytes, system

BENCH = "folder_submit"
QUEUE = "wan_local"


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--n", type=int, default=None, help="images in the folder (default 100000; 2000 quick)"
    )


def write_folder(s: BenchSystem, prefix: str, n: int) -> list[str]:
    data = png_bytes(0)
    root = s.storage_dir / "objects"
    for start in range(0, n, 1000):
        folder = root / prefix / f"part-{start // 1000:03d}"
        folder.mkdir(parents=True, exist_ok=True)
    keys = [f"{prefix}part-{i // 1000:03d}/photo-{i:06d}.png" for i in range(n)]
    for key in keys:
        (root / key).write_bytes(data)
    return keys


def submit(s: BenchSystem, r: redis.Redis, label: str, n: int, body: dict) -> None:
    t0 = time.time()
    resp = s.api.post("/api/v1/jobs", json=body)
    accepted = time.time() - t0
    assert resp.status_code == 201, resp.text
    job = resp.json()
    assert job["total"] == n, job["total"]
    while True:
        counts = s.api.get(f"/api/v1/jobs/{job['id']}", params={"items_limit": 0}).json()["counts"]
        if counts["running"] + counts["succeeded"] >= 1:
            break
        if time.time() - t0 > 300:
            raise TimeoutError(f"no item of the folder job ran: {counts}")
        time.sleep(0.02)
    first = time.time() - t0
    emit(BENCH, f"{label}_accept_s", accepted, "s", n=n, target="seconds", met=accepted < 30)
    emit(BENCH, f"{label}_item_rows_per_s", n / accepted, "rows/s", n=n)
    emit(BENCH, f"{label}_first_item_running_s", first, "s", n=n)
    emit(BENCH, f"{label}_broker_messages", depth(r, QUEUE), "messages", n=n, pending=counts["pending"])
    s.api.post(f"/api/v1/jobs/{job['id']}/cancel")


def run(ctx: Context, args: argparse.Namespace) -> None:
    n = args.n or (2000 if ctx.quick else 100_000)
    with system(ctx, "folder", workers=("control", QUEUE)) as s:
        r = redis.Redis.from_url(s.stack.redis_url)
        note(f"writing {n} images into the storage directory")
        keys = write_folder(s, "photos/2026-12/", n)
        s.api.submit(s.api.upload([png_bytes(1)]))  # warm-up
        note(f"submitting the folder ({n} images)")
        submit(s, r, "prefix", n, {"provider": "echo", "inputs_prefix": "photos/2026-12/", "prompt": "x"})

        lines = "".join(
            json.dumps({"key": k, "prompt": f"photo {i} turns"}) + "\n" for i, k in enumerate(keys)
        )
        f = s.api.post(
            "/api/v1/prompt-files", files={"file": ("prompts.jsonl", lines.encode(), "application/x-ndjson")}
        )
        assert f.status_code == 201, f.text
        note(f"submitting the folder with a prompts file of {n} rows ({len(lines) / 2**20:.1f} MiB)")
        body = {"provider": "echo", "inputs_prefix": "photos/2026-12/", "prompts_file": f.json()["key"]}
        submit(s, r, "prefix_with_prompts", n, body)


def main(argv: list[str] | None = None) -> int:
    return main_for(BENCH, add_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
