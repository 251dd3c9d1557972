"""Scale: many simulated GPU workers against one control worker.

One worker process with a threads pool of W (default 200) runs echo items with a fixed delay,
standing in for W GPU hosts; one control worker (the product's: 2 processes and the schedule)
applies their reports. Measured:
- reports applied per second (the `item.running` / `item.succeeded` events in the database,
  over the span between the first and the last);
- report lag: the event's `at` (when the control worker updated the row) minus the
  manifest's `finished_at` (when the worker finished), per item; for `running`, the event's
  `at` minus the report's own `at` (the item's started_at);
- database connections (pg_stat_activity on the system's database), sampled twice a second.
Needs Postgres.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from datetime import datetime

from bench.common import (
    Context,
    CpuMeter,
    emit,
    main_for,
    note,
    percentile,
    pg_connect,
    png_bytes,
    stack_leaders,
    system,
)

BENCH = "scale"
LAG_TARGET_S = 2.0
# Connections the database may see: each web worker and each control process has one engine
# (app/db.py: pool_size 5 + max_overflow 10); GPU workers hold no database credentials.
PER_ENGINE = 15
WEB_WORKERS = 2
CONTROL_PROCESSES = 2


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers", type=int, default=None, help="simulated GPU workers (default 200; 50 with --quick)"
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="items per worker (default 3; 2 with --quick)"
    )
    parser.add_argument(
        "--delay", type=float, default=None, help="seconds per item (default 5; 2 with --quick)"
    )


class ConnectionSampler(threading.Thread):
    def __init__(self, db_url: str) -> None:
        super().__init__(daemon=True)
        self.conn = pg_connect(db_url)
        self.samples: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with self.conn.cursor() as cur:
            while not self.stop.wait(0.5):
                cur.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                self.samples.append(cur.fetchone()[0])
        self.conn.close()


def run(ctx: Context, args: argparse.Namespace) -> None:
    if ctx.pg is None:
        note("no Postgres: the scale benchmark counts Postgres connections; skipped")
        return
    workers = args.workers or (50 if ctx.quick else 200)
    rounds = args.rounds or (2 if ctx.quick else 3)
    delay = args.delay if args.delay is not None else (2.0 if ctx.quick else 5.0)
    n = workers * rounds
    with system(ctx, "scale", workers=("control",)) as s:
        s.start_worker("wan_local", pool="threads", concurrency=workers)
        keys = s.api.upload([png_bytes(i) for i in range(20)])
        s.api.wait(s.api.submit(keys[:2], params={"queue": "wan_local"})["id"], 120)
        sampler = ConnectionSampler(s.db_url)
        sampler.start()
        cpu = CpuMeter(stack_leaders(s.stack))
        cpu.start()
        note(f"{workers} simulated workers, {n} items of {delay} s")
        t0 = time.time()
        job = s.api.submit(
            [keys[i % len(keys)] for i in range(n)], params={"queue": "wan_local", "delay_s": delay}
        )
        done = s.api.wait(job["id"], timeout=300 + n * delay / workers * 10, every=0.5)
        elapsed = time.time() - t0
        cpu.stop()
        sampler.stop.set()
        sampler.join()
        if done["status"] != "succeeded":
            raise RuntimeError(f"scale job ended {done['status']}: {done['counts']}")
        items = {i["id"]: i for i in s.api.items(job["id"])}
        conn = pg_connect(s.db_url)
        with conn.cursor() as cur:
            cur.execute(
                "SELECT item_id, to_status, attempt, at FROM events "
                "WHERE job_id = %s AND item_id IS NOT NULL AND to_status IN ('running', 'succeeded')",
                (job["id"],),
            )
            events = cur.fetchall()
        conn.close()
        applied = [at.timestamp() for _, _, _, at in events]
        span = max(applied) - min(applied)
        per_second: dict[int, int] = {}
        for at in applied:
            per_second[int(at)] = per_second.get(int(at), 0) + 1
        succeeded_lag, running_lag = [], []
        for item_id, to_status, attempt, at in events:
            item = items[item_id]
            if to_status == "succeeded":
                manifest = s.manifest(job["id"], item_id, attempt)
                if manifest:
                    succeeded_lag.append(at.timestamp() - manifest["finished_at"])
            elif item["started_at"]:
                running_lag.append(at.timestamp() - datetime.fromisoformat(item["started_at"]).timestamp())
        common = {"workers": workers, "items": n, "delay_s": delay}
        emit(
            BENCH,
            "reports_applied_per_s",
            len(events) / span,
            "reports/s",
            peak_1s=max(per_second.values()),
            offered_per_s=round(2 * n / elapsed, 1),
            **common,
        )
        p99 = percentile(succeeded_lag, 99)
        emit(
            BENCH,
            "succeeded_lag_p99_s",
            p99,
            "s",
            target=f"< {LAG_TARGET_S:g}",
            met=p99 < LAG_TARGET_S,
            p50=round(percentile(succeeded_lag, 50), 3),
            max=round(max(succeeded_lag), 3),
            **common,
        )
        emit(
            BENCH,
            "running_lag_p99_s",
            percentile(running_lag, 99),
            "s",
            p50=round(percentile(running_lag, 50), 3),
            lost_running_reports=n - len(running_lag),
            **common,
        )
        bound = PER_ENGINE * (WEB_WORKERS + CONTROL_PROCESSES)
        most = max(sampler.samples or [0])
        emit(
            BENCH,
            "db_connections_max",
            most,
            "connections",
            target=f"<= {bound} (web + control pools)",
            met=most <= bound,
            median=round(percentile([float(x) for x in sampler.samples], 50), 1) if sampler.samples else None,
            **common,
        )
        emit(BENCH, "job_makespan_s", elapsed, "s", ideal_s=round(rounds * delay, 1), **common)
        # On one machine the simulated workers take CPU from the control worker: show who used what.
        control_ms = cpu.used.get("control", 0.0) * 1000 / max(1, len(events))
        emit(
            BENCH,
            "control_cpu_ms_per_report",
            control_ms,
            "ms",
            cpu_s_by_process={k: round(v, 1) for k, v in sorted(cpu.used.items(), key=lambda kv: -kv[1])},
            run_s=round(elapsed, 1),
            **common,
        )


def main(argv: list[str] | None = None) -> int:
    return main_for(BENCH, add_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
