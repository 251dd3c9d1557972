"""Backlog: Redis memory and the control side's periodic work with 1,000 / 10,000 / 200,000 pending items.

Postgres is the queue of record; the broker holds only a window per queue (app/services/scheduler.py),
so Redis memory and the work per reconcile tick should not grow with the backlog. One system (web,
the control worker with its schedule, one `wan_local` worker with one slot running echo items of
1 s) gets, for each size N, one job of N items (a few uploaded images used over and over). Once
its items run:

- **Redis**: `INFO memory` `used_memory` and the `wan_local` queue's messages (every priority
  list), sampled twice a second while the job runs (and while the probe below runs); the maxima.
- **Control worker CPU** per second of running (`/proc`, the control worker's process group and
  the Postgres backends), over a quiet stretch: what the schedule (a fill every second, the
  reconciler every RECONCILE_INTERVAL_S) and the applier cost with this backlog.
- **Reconcile CPU per tick**: the product's `app.services.reconcile.reconcile()` called directly,
  after one warm-up call, `--calls` times in a separate process started with the control worker's
  environment (its settings, database and Redis) inside `app.core.create_core_app`'s app
  context, as `tasks/control.py` runs it. Per call: that process's CPU (`time.process_time`), plus
  the CPU of the Postgres backends its connections use (`/proc/PID/schedstat`, nanoseconds): the
  figure is their sum, so a query that grows with the backlog shows even though its cost lands
  in Postgres. Wall time, time inside SQL statements and the statement count are extras. A
  separate process rather than the worker's log: the worker's task timing includes queueing
  and other tasks, and a fresh process's settings are read once from the environment given
  (app/config.py `settings()`). The real control worker keeps running meanwhile (as a second
  control process would), so a call may wait on the window's advisory lock: wall only, not CPU.
- **fill('wan_local')**: the other periodic per-queue work (beat, after every report batch),
  measured the same way.

Backlogs add up: before the next size the job is paused, not cancelled (its pending items stay in
Postgres, so the step for 200,000 runs with about 211,000 pending rows, `pending_in_db` says how
many). Cancelling would leave one Redis cancel flag per cancelled item (pending ones included,
kept 7 days: app/services/jobs.py `cancel_job` -> `coordination().cancel(moved)`), which would
count the previous sizes into the next one's Redis memory. That cost is measured at the end on
its own: every job is cancelled and the growth of Redis memory and keys is reported
(`cancel_redis_growth_mb`).

Metric names end in the size (`reconcile_cpu_ms_per_tick_200k`). `redis_used_memory_mb` also
gives the keys by kind with their MEMORY USAGE: what Redis holds besides the window is per item
*processed* (attempt, dispatch, outcome, task result; kept 3 to 7 days), not per item waiting.
The largest job also shows that it runs from Postgres: at least 20 of its items succeed.
Summary ratios compare the largest size with the smallest. Needs Postgres.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import redis

from bench.bulk_submit import depth
from bench.common import (
    ROOT,
    BenchSystem,
    Context,
    CpuMeter,
    emit,
    main_for,
    note,
    percentile,
    png_bytes,
    stack_leaders,
    system,
)

BENCH = "backlog"
QUEUE = "wan_local"
SIZES = (1_000, 10_000, 200_000)
QUICK_SIZES = (100, 1_000, 5_000)
MIN_SUCCEEDED = 20
MB = 1024 * 1024
KEY_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32}|\d+")


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sizes",
        default=None,
        help="comma-separated job sizes (default 1000,10000,200000; 100,1000,5000 with --quick)",
    )
    parser.add_argument(
        "--calls", type=int, default=None, help="reconcile/fill calls measured per size (default 10)"
    )
    parser.add_argument(
        "--sample-s",
        type=float,
        default=None,
        help="seconds of control worker CPU per size (default 15; 5 with --quick)",
    )
    parser.add_argument("--delay", type=float, default=1.0, help="seconds per echo item (default 1)")


def label(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


# --- the probe: runs in its own process with the control worker's environment ----------------------


def _backend_cpu_ns(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def probe(out: Path, calls: int, queue: str) -> None:
    """Call reconcile() and fill(queue) `calls` times each (after one warm-up call of each) and
    write what each call cost to `out` (JSON)."""
    import sqlalchemy as sa

    from app.core import create_core_app
    from app.db import db
    from app.services.reconcile import reconcile
    from app.services.scheduler import fill

    app = create_core_app("bench-backlog-probe")
    with app.app_context():
        engine = db.engine
        backends: set[int] = set()
        sql = {"n": 0, "s": 0.0}

        @sa.event.listens_for(engine, "connect")
        def on_connect(dbapi_conn: Any, _record: Any) -> None:
            backends.add(dbapi_conn.get_backend_pid())

        @sa.event.listens_for(engine, "before_cursor_execute")
        def before(conn: Any, cursor: Any, statement: Any, params: Any, context: Any, many: Any) -> None:
            conn.info["bench_t0"] = time.perf_counter()

        @sa.event.listens_for(engine, "after_cursor_execute")
        def after(conn: Any, cursor: Any, statement: Any, params: Any, context: Any, many: Any) -> None:
            sql["n"] += 1
            sql["s"] += time.perf_counter() - conn.info.pop("bench_t0", time.perf_counter())

        def measure(fn: Any) -> dict[str, Any]:
            pg0 = {pid: _backend_cpu_ns(pid) for pid in backends}
            n0, s0 = sql["n"], sql["s"]
            c0, w0 = time.process_time(), time.perf_counter()
            try:
                result = fn()
            finally:
                db.session.remove()
            c1, w1 = time.process_time(), time.perf_counter()
            pg_ns = sum(_backend_cpu_ns(pid) - pg0.get(pid, 0) for pid in backends)
            return {
                "cpu_ms": (c1 - c0) * 1000,
                "pg_cpu_ms": pg_ns / 1e6,
                "wall_ms": (w1 - w0) * 1000,
                "sql_ms": (sql["s"] - s0) * 1000,
                "statements": sql["n"] - n0,
                "result": result,
            }

        def do_fill() -> dict[str, Any]:
            f = fill(queue)
            return {"window": f.window, "published": f.published, "recalled": f.recalled}

        found: dict[str, list[dict[str, Any]]] = {"reconcile": [], "fill": []}
        for name, fn in (("reconcile", reconcile), ("fill", do_fill)):
            measure(fn)  # warm-up: imports, the first connections, the provider registry
            for _ in range(calls):
                found[name].append(measure(fn))
                time.sleep(0.1)
        found["backends"] = sorted(backends)  # type: ignore[assignment]
    out.write_text(json.dumps(found, default=str))


def probe_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.backlog probe")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--queue", default=QUEUE)
    args = parser.parse_args(argv)
    probe(args.out, args.calls, args.queue)
    return 0


def run_probe(s: BenchSystem, calls: int, tag: str) -> dict[str, Any]:
    out = s.var / f"probe-{tag}.json"
    cmd = [sys.executable, "-m", "bench.backlog", "probe", "--out", str(out), "--calls", str(calls)]
    env = s.stack.worker_env("control")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(cmd, env=env, cwd=str(ROOT), capture_output=True, text=True, timeout=900)
    (s.var / f"probe-{tag}.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"probe failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
    return json.loads(out.read_text())


def _totals(calls: list[dict[str, Any]]) -> dict[str, int]:
    """What the reconcile calls did, summed (all zero: nothing to repair, the usual tick)."""
    did: dict[str, int] = {}
    for c in calls:
        for k, v in (c["result"] or {}).items():
            did[k] = did.get(k, 0) + int(v)
    return did


def summary(calls: list[dict[str, Any]]) -> dict[str, Any]:
    """Median/p90 of the total CPU (process + Postgres backends) and medians of the parts."""
    total = [c["cpu_ms"] + c["pg_cpu_ms"] for c in calls]

    def med(key: str) -> float:
        return round(percentile([float(c[key]) for c in calls], 50), 2)

    return {
        "median": percentile(total, 50),
        "p90": round(percentile(total, 90), 2),
        "process_cpu_ms": med("cpu_ms"),
        "pg_cpu_ms": med("pg_cpu_ms"),
        "wall_ms": med("wall_ms"),
        "wall_p90_ms": round(percentile([c["wall_ms"] for c in calls], 90), 2),
        "sql_ms": med("sql_ms"),
        "statements": med("statements"),
        "calls": len(calls),
    }


# --- the run ------------------------------------------------------------------------------------------


class RedisSampler(threading.Thread):
    """used_memory and the queue's depth, twice a second."""

    def __init__(self, r: redis.Redis) -> None:
        super().__init__(daemon=True)
        self.r = r
        self.memory: list[int] = []
        self.depths: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while True:
            self.memory.append(int(self.r.info("memory")["used_memory"]))
            self.depths.append(depth(self.r, QUEUE))
            if self.stop.wait(0.5):
                return


def key_kinds(r: redis.Redis) -> dict[str, list[int]]:
    """Keys by kind (ids and numbers folded into `*`) -> [keys, bytes (MEMORY USAGE)]: what the
    memory is made of. Only while the keyspace is small (before the final cancel)."""
    kinds: dict[str, list[int]] = {}
    for raw in r.scan_iter(count=1000):
        kind = KEY_ID.sub("*", raw.decode(errors="replace"))
        entry = kinds.setdefault(kind, [0, 0])
        entry[0] += 1
        entry[1] += int(r.memory_usage(raw) or 0)
    return dict(sorted(kinds.items(), key=lambda kv: -kv[1][1]))


def wait_counts(s: BenchSystem, job_id: str, done: Any, timeout: float, what: str) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        counts = s.api.job(job_id)["counts"]
        if done(counts):
            return counts
        time.sleep(0.25)
    raise TimeoutError(f"job {job_id}: not {what} after {timeout} s: {counts}")


def pending_in_db(s: BenchSystem, job_ids: list[str]) -> int:
    return sum(s.api.job(j)["counts"]["pending"] for j in job_ids)


def run(ctx: Context, args: argparse.Namespace) -> None:
    if ctx.pg is None:
        note("no Postgres: the backlog benchmark is about Postgres as the queue of record; skipped")
        return
    sizes = (
        tuple(int(x) for x in args.sizes.split(",") if x.strip())
        if args.sizes
        else (QUICK_SIZES if ctx.quick else SIZES)
    )
    calls = args.calls or 10
    sample_s = args.sample_s if args.sample_s is not None else (5.0 if ctx.quick else 15.0)
    per_size: dict[int, dict[str, Any]] = {}
    with system(ctx, "backlog", workers=("control",)) as s:
        s.start_worker(QUEUE, concurrency=1)
        r = redis.Redis.from_url(s.stack.redis_url)
        images = s.api.upload([png_bytes(i) for i in range(8)])
        s.api.wait(s.api.submit(images[:2], params={"queue": QUEUE})["id"], 120)
        jobs: list[str] = []
        for n in sizes:
            tag = label(n)
            common = {"n": n}
            before_mb = int(r.info("memory")["used_memory"]) / MB
            note(f"{tag}: submitting one job of {n:,} items")
            t0 = time.perf_counter()
            job = s.api.submit(
                [images[i % len(images)] for i in range(n)], params={"queue": QUEUE, "delay_s": args.delay}
            )
            submit_s = time.perf_counter() - t0
            jobs.append(job["id"])
            emit(BENCH, f"submit_s_{tag}", submit_s, "s", **common)
            wait_counts(s, job["id"], lambda c: c["running"] + c["succeeded"] > 0, 120, "running")
            sampler = RedisSampler(r)
            sampler.start()
            note(f"{tag}: running; {sample_s:g} s of control worker CPU")
            cpu = CpuMeter(stack_leaders(s.stack))
            cpu.start()
            t_cpu = time.monotonic()
            time.sleep(sample_s)
            cpu.stop()
            span = time.monotonic() - t_cpu
            note(f"{tag}: reconcile and fill, {calls} calls each")
            found = run_probe(s, calls, tag)
            if n == max(sizes):
                counts = wait_counts(
                    s,
                    job["id"],
                    lambda c: c["succeeded"] >= MIN_SUCCEEDED,
                    MIN_SUCCEEDED * args.delay * 5 + 120,
                    f"{MIN_SUCCEEDED} succeeded",
                )
            else:
                counts = s.api.job(job["id"])["counts"]
            sampler.stop.set()
            sampler.join()
            pending = pending_in_db(s, jobs)
            common["pending_in_db"] = pending
            mem = max(sampler.memory) / MB
            emit(
                BENCH,
                f"redis_used_memory_mb_{tag}",
                mem,
                "MB",
                before_submit_mb=round(before_mb, 3),
                samples=len(sampler.memory),
                keys=r.dbsize(),
                keys_by_kind=key_kinds(r),
                **common,
            )
            emit(
                BENCH,
                f"broker_messages_{tag}",
                max(sampler.depths),
                "messages",
                median=percentile([float(d) for d in sampler.depths], 50),
                **common,
            )
            control_ms = cpu.used.get("control", 0.0) * 1000 / span
            emit(
                BENCH,
                f"control_cpu_ms_per_s_{tag}",
                control_ms,
                "ms/s",
                postgres_ms_per_s=round(cpu.used.get("postgres", 0.0) * 1000 / span, 1),
                cpu_s_by_process={k: round(v, 2) for k, v in sorted(cpu.used.items(), key=lambda kv: -kv[1])},
                span_s=round(span, 1),
                **common,
            )
            rec = summary(found["reconcile"])
            fil = summary(found["fill"])
            emit(
                BENCH,
                f"reconcile_cpu_ms_per_tick_{tag}",
                rec.pop("median"),
                "ms",
                **rec,
                did=_totals(found["reconcile"]),
                **common,
            )
            emit(
                BENCH,
                f"fill_cpu_ms_{tag}",
                fil.pop("median"),
                "ms",
                **fil,
                window=found["fill"][-1]["result"]["window"],
                **common,
            )
            per_size[n] = {
                "mem": mem,
                "reconcile": percentile([c["cpu_ms"] + c["pg_cpu_ms"] for c in found["reconcile"]], 50),
            }
            if n == max(sizes):
                emit(
                    BENCH,
                    f"items_succeeded_{tag}",
                    counts["succeeded"],
                    "items",
                    target=f">= {MIN_SUCCEEDED}",
                    met=counts["succeeded"] >= MIN_SUCCEEDED,
                    counts=counts,
                    **common,
                )
            r_ = s.api.post(f"/api/v1/jobs/{job['id']}/pause")
            r_.raise_for_status()

        # What cancelling costs in Redis: a flag per unfinished item.
        time.sleep(1)
        mem0, keys0 = int(r.info("memory")["used_memory"]), r.dbsize()
        cancelled = 0
        t0 = time.perf_counter()
        for job_id in jobs:
            resp = s.api.post(f"/api/v1/jobs/{job_id}/cancel")
            resp.raise_for_status()
            cancelled += resp.json()["cancelled"]
        cancel_s = time.perf_counter() - t0
        time.sleep(1)
        mem1, keys1 = int(r.info("memory")["used_memory"]), r.dbsize()
        emit(
            BENCH,
            "cancel_redis_growth_mb",
            (mem1 - mem0) / MB,
            "MB",
            items_cancelled=cancelled,
            keys_added=keys1 - keys0,
            bytes_per_item=round((mem1 - mem0) / max(1, cancelled), 1),
            cancel_s=round(cancel_s, 2),
        )

    lo, hi = min(per_size), max(per_size)
    ratio_mem = per_size[hi]["mem"] / per_size[lo]["mem"]
    emit(
        BENCH,
        f"redis_memory_ratio_{label(hi)}_vs_{label(lo)}",
        ratio_mem,
        "x",
        target="≈ 1 (flat)",
        met=ratio_mem < 1.5,
    )
    ratio_cpu = per_size[hi]["reconcile"] / max(per_size[lo]["reconcile"], 1e-9)
    emit(
        BENCH,
        f"reconcile_cpu_ratio_{label(hi)}_vs_{label(lo)}",
        ratio_cpu,
        "x",
        target="≈ 1 (flat)",
        met=ratio_cpu < 2,
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["probe"]:
        return probe_main(argv[1:])
    return main_for(BENCH, add_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
