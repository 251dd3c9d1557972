"""Open job pages: what 50 live job streams cost while a 2,000-item job runs.

One system (control worker, two one-lane echo workers as `throughput` runs them, web 2 x 32
threads, Postgres). The same 2,000-item echo job runs twice: once with nobody watching, once with
50 clients reading `GET /api/v1/jobs/{id}/stream` (the job page's window of 100 items) from start to
finish. Per run: the job's wall time, the web app's CPU, and the database's transactions (Postgres
`pg_stat_database.xact_commit + xact_rollback` of the system's database). Each stream must end with
the job's final `succeeded` snapshot.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from datetime import datetime
from typing import Any

import requests

from bench.common import (
    BenchSystem,
    Context,
    CpuMeter,
    emit,
    main_for,
    note,
    pg_connect,
    png_bytes,
    stack_leaders,
    system,
)

BENCH = "streams"


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=None, help="items (default 2000; 300 with --quick)")
    parser.add_argument("--streams", type=int, default=50, help="concurrent streams (default 50)")


def transactions(db_url: str) -> int:
    conn = pg_connect(db_url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
            )
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def read_stream(base: str, token: str, job_id: str, out: dict[str, Any]) -> None:
    """Read one stream to its end; note events, bytes and the last job status seen."""
    events = 0
    size = 0
    status = None
    with requests.get(
        f"{base}/api/v1/jobs/{job_id}/stream",
        params={"items_offset": 0, "items_limit": 100},
        headers={"Authorization": token},
        stream=True,
        timeout=120,
    ) as r:
        kind = None
        for line in r.iter_lines(decode_unicode=True):
            size += len(line) + 1
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events += 1
                if kind == "job":
                    status = json.loads(line[6:])["status"]
            elif not line:
                kind = None
    out.update(events=events, bytes=size, status=status)


def run_job(s: BenchSystem, n: int, keys: list[str], streams: int) -> dict[str, Any]:
    inputs = [keys[i % len(keys)] for i in range(n)]
    cpu = CpuMeter({pid: name for pid, name in stack_leaders(s.stack).items() if name == "web"})
    xacts = transactions(s.db_url)
    cpu.start()
    t0 = time.time()
    job = s.api.submit(inputs)
    results: list[dict[str, Any]] = [{} for _ in range(streams)]
    token = s.api.s.headers["Authorization"]
    threads = [
        threading.Thread(target=read_stream, args=(s.api.base, token, job["id"], results[i]), daemon=True)
        for i in range(streams)
    ]
    for t in threads:
        t.start()
    done = s.api.wait(job["id"], timeout=300 + n)
    for t in threads:
        t.join(60)
    cpu.stop()
    elapsed = datetime.fromisoformat(done["finished_at"]).timestamp() - t0
    return {
        "elapsed": elapsed,
        "web_cpu_s": cpu.used.get("web", 0.0),
        "xacts": transactions(s.db_url) - xacts,
        "streams": results,
    }


def run(ctx: Context, args: argparse.Namespace) -> None:
    if ctx.pg is None:
        note("no Postgres: pg_stat_database is what this benchmark reads; skipped")
        return
    n = args.n or (300 if ctx.quick else 2000)
    with system(ctx, "streams", workers=("control",)) as s:
        s.stack.stop("web")
        s.stack.start_web(workers=2, threads=32)
        for name in ("wan_local_0", "wan_local_1"):
            s.start_worker("wan_local", name=name, concurrency=1)
        keys = s.api.upload([png_bytes(i) for i in range(10)])
        s.api.wait(s.api.submit(keys[:4])["id"], timeout=60)  # warm up

        note(f"{n} echo items, nobody watching")
        alone = run_job(s, n, keys, 0)
        note(f"{n} echo items, {args.streams} streams open")
        watched = run_job(s, n, keys, args.streams)

        finished = sum(1 for r in watched["streams"] if r.get("status") == "succeeded")
        common = {"n": n, "streams": args.streams}
        emit(BENCH, "job_s_unwatched", alone["elapsed"], "s", n=n)
        emit(BENCH, "job_s_watched", watched["elapsed"], "s", **common)
        emit(BENCH, "web_cpu_s_unwatched", alone["web_cpu_s"], "s", n=n)
        emit(BENCH, "web_cpu_s_watched", watched["web_cpu_s"], "s", **common)
        emit(BENCH, "db_transactions_unwatched", alone["xacts"], "transactions", n=n)
        emit(BENCH, "db_transactions_watched", watched["xacts"], "transactions", **common)
        extra = (watched["xacts"] - alone["xacts"]) / max(1, args.streams) / max(0.001, watched["elapsed"])
        emit(BENCH, "db_transactions_per_stream_per_s", extra, "/s", **common)
        emit(
            BENCH,
            "streams_ending_succeeded",
            finished,
            "streams",
            target=f"= {args.streams}",
            met=finished == args.streams,
        )
        events = [r.get("events", 0) for r in watched["streams"]]
        emit(BENCH, "events_per_stream_median", sorted(events)[len(events) // 2], "events", **common)
        size = [r.get("bytes", 0) for r in watched["streams"]]
        emit(BENCH, "bytes_per_stream_median", sorted(size)[len(size) // 2], "bytes", **common)


def main(argv: list[str] | None = None) -> int:
    return main_for(BENCH, add_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
