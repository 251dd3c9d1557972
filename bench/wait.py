"""Waiting requests: 50 concurrent `GET /api/v1/jobs/{id}` with `Prefer: wait=N` against a running
system, and how many database connections they hold meanwhile.

Fifty one-item jobs are parked on the `sam3` queue, which has no worker here, so they stay queued.
Phase 1: 50 requests with `Prefer: wait=10` all wait their full 10 s; during the wait Postgres's
`pg_stat_activity` is sampled for the system's database (all connections, and those not idle).
Phase 2: 50 requests with `Prefer: wait=60`, then every job is cancelled: each request must answer
with its cancelled job as soon as the cancel's notification arrives (time from cancel to answer).

The web app is the product's gunicorn (gthread) with 2 workers x 32 threads, so all 50 requests
are in the app at once (with the default 2 x 16 the last 18 would queue in gunicorn's backlog).
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from bench.common import Context, emit, main_for, note, percentile, pg_connect, png_bytes, system

BENCH = "wait"


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", type=int, default=50, help="concurrent waiting requests (default 50)")
    parser.add_argument("--wait", type=int, default=10, help="Prefer: wait=N of phase 1 (default 10)")


def connections(db_url: str) -> tuple[int, int]:
    """(all connections to the database, those not idle), not counting this sampler's own."""
    conn = pg_connect(db_url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*), count(*) FILTER (WHERE state <> 'idle') FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            total, busy = cur.fetchone()
            return int(total), int(busy)
    finally:
        conn.close()


def run(ctx: Context, args: argparse.Namespace) -> None:
    if ctx.pg is None:
        note("no Postgres: pg_stat_activity is what this benchmark reads; skipped")
        return
    n = args.requests
    with system(ctx, "wait", workers=("control",)) as s:
        s.stack.stop("web")
        s.stack.start_web(workers=2, threads=32)
        base, token = s.api.base, s.api.s.headers["Authorization"]
        keys = s.api.upload([png_bytes(i) for i in range(n)])
        jobs = [s.api.submit([k], params={"queue": "sam3"})["id"] for k in keys]
        time.sleep(1.0)
        before = connections(s.db_url)

        def wait_for(job_id: str, seconds: int) -> tuple[int, str, float, float]:
            with requests.Session() as session:
                t = time.monotonic()
                r = session.get(
                    f"{base}/api/v1/jobs/{job_id}",
                    params={"items_limit": 0},
                    headers={"Authorization": token, "Prefer": f"wait={seconds}"},
                    timeout=seconds + 60,
                )
                return r.status_code, r.json().get("status", "?"), t, time.monotonic()

        # Phase 1: every request waits out its deadline; sample connections meanwhile.
        samples: list[tuple[int, int]] = []
        with ThreadPoolExecutor(n) as pool:
            futures = [pool.submit(wait_for, j, args.wait) for j in jobs]
            # From 2 s on: the requests' first reads (a burst of 50 at once) are over, all are waiting.
            time.sleep(2.0)
            while not all(f.done() for f in futures):
                samples.append(connections(s.db_url))
                time.sleep(0.5)
            answers = [f.result() for f in futures]
        answered = sum(1 for code, status, *_ in answers if code == 200 and status == "queued")
        waited = [end - start for _, _, start, end in answers]
        emit(BENCH, "phase1_answered", answered, "requests", target=f"= {n}", met=answered == n)
        emit(
            BENCH,
            "phase1_min_wait_s",
            min(waited),
            "s",
            target=f">= {args.wait}",
            met=min(waited) >= args.wait,
        )
        emit(BENCH, "db_connections_before", before[0], "connections", busy=before[1])
        emit(
            BENCH,
            "db_connections_during_wait_median",
            percentile([float(t) for t, _ in samples], 50),
            "connections",
            busy_median=percentile([float(b) for _, b in samples], 50),
        )
        emit(
            BENCH,
            "db_connections_during_wait_max",
            max(t for t, _ in samples),
            "connections",
            busy_max=max(b for _, b in samples),
            samples=len(samples),
            waiting_requests=n,
            web="gunicorn gthread 2 workers x 32 threads",
        )

        # Phase 2: long waits, woken by the cancel's notification.
        with ThreadPoolExecutor(n) as pool:
            futures = [pool.submit(wait_for, j, 60) for j in jobs]
            time.sleep(3.0)
            during = connections(s.db_url)
            cancelled_at: dict[str, float] = {}
            for j in jobs:
                s.api.post(f"/api/v1/jobs/{j}/cancel").raise_for_status()
                cancelled_at[j] = time.monotonic()
            answers = [f.result() for f in futures]
        woken = sum(1 for code, status, *_ in answers if code == 200 and status == "cancelled")
        lag = [(end - cancelled_at[j]) * 1000 for j, (_, _, _, end) in zip(jobs, answers, strict=True)]
        emit(BENCH, "phase2_answered_cancelled", woken, "requests", target=f"= {n}", met=woken == n)
        emit(BENCH, "phase2_db_connections_during_wait", during[0], "connections", busy=during[1])
        emit(BENCH, "wake_after_cancel_p50_ms", percentile(lag, 50), "ms")
        emit(BENCH, "wake_after_cancel_p99_ms", percentile(lag, 99), "ms")


def main(argv: list[str] | None = None) -> int:
    return main_for(BENCH, add_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
