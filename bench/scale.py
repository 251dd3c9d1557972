"""Scale: many simulated GPU workers against the control side. Needs Postgres.

Two scenarios (`--scenario fan|rate|all`; `all`, the default, runs both):

**Fan-in** (`fan`). One worker process with a threads pool of W (default 200) runs echo items
with a fixed delay, standing in for W GPU hosts; one control worker (the product's: 2 processes
and the schedule) applies their reports. Measured:
- reports applied per second (the `item.running` / `item.succeeded` events in the database,
  over the span between the first and the last);
- report lag: the event's `at` (when the control worker updated the row) minus the
  manifest's `finished_at` (when the worker finished), per item, with its p99 split at the
  report's own `at` into the worker's part and the control side's; for `running`, the event's
  `at` minus the report's own `at` (the item's started_at);
- database connections (pg_stat_activity on the system's database), sampled twice a second.

**Rate** (`rate`). Simulated workers finish short items at a fixed offered rate for a fixed time,
against one control process, then against two (`APPLIER_PARTITIONS=2` in the whole system's
environment; the second control process runs without beat). The workers are P `wan_local`
processes (default 2), each with L lanes (default 75; `-c L` on a GPU queue means L lanes, and on a
machine without a GPU each lane is a thread of its own standing in for a device: tasks/runtime.py
`lane_devices`, tasks/lanes.py) running echo items of d seconds (default 0.5): offered rate =
P x L / d items/s (default 300), and rate x seconds (default 60) items are submitted at once, in
jobs of at most 5,000. Two processes, not one of 150 lanes: one process's Python threads share one
core, which caps it near 140 items/s here. Postgres holds the items and the scheduler keeps a
window of them in Redis (`WINDOW_MAX` is raised so the cap never binds: the window follows the
slots the workers announce, L x (batch 1 + prefetch 1..4) per process, times WINDOW_FACTOR, which
the caller's environment may set). Measured over the steady part, the span between the 10th and
the 90th percentile of the items' start times (ramp-up and drain left out):
- `rate_started_items_per_s_*`: items started per second (the workers' own `started_at`) against
  the offered rate, the lanes' duty (model time / (lanes x span)) and, sampled twice a second, the
  window (slots announced, items queued + running in Postgres) beside what waits in Redis for a
  worker to take it and what the workers hold unstarted: idle lanes while messages wait in Redis
  are the workers' intake, not the scheduler's window;
- `rate_applied_items_per_s_*`: `item.succeeded` events per second (with all reports per second,
  the reports waiting in the stream, and how many items of the run the reconciler applied from
  their manifest while their report still waited in the stream);
- `rate_lag_p99_s_*`: `succeeded` lag (event `at` minus manifest `finished_at`) p50/p99/max,
  target p99 < 2 s, split at the report's own `at` into the worker's part (manifest written to
  report made) and the rest (report pushed, waiting in the stream, applied);
- `rate_control_cpu_ms_per_item_*`: CPU of the control processes per item applied, sampled once a
  second and differenced over the steady span, with every process's share (workers, Redis,
  Postgres, web, this benchmark), how many cores each used, and the whole machine's busy cores
  (`other_cores`: used by processes outside this system, e.g. a test run beside it).

What the rate figures mean on one small machine: the simulated workers, Redis, Postgres and the
control side share its cores, so the rate the workers reach is bounded by the whole system's CPU
per item, and a short fall of the offered rate says the machine is full, not that the control side
is slow. The portable figure is the control side's CPU per item: rate x ms per item / 1000 =
cores the control processes need at that rate (emitted as `control_cores_at_300_per_s`; Postgres's
own share is given beside it). Lag and the applied rate are measured at the rate actually reached.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from datetime import datetime

import redis

from app.coordination import CONSUMERS_KEY, HELD_KEY, REPORTS_KEY
from bench.common import (
    PG_GROUP,
    BenchSystem,
    Context,
    CpuMeter,
    emit,
    group_cpu,
    main_for,
    note,
    percentile,
    pg_connect,
    png_bytes,
    stack_leaders,
    system,
)

BENCH = "scale"
TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
LAG_TARGET_S = 2.0
# Connections the database may see: each web worker and each control process has one engine
# (app/db.py: pool_size 5 + max_overflow 10); GPU workers hold no database credentials.
PER_ENGINE = 15
WEB_WORKERS = 2
CONTROL_PROCESSES = 2
# Rate scenario: the figure is 300 items/s; what this machine offers is set by the arguments.
RATE_TARGET_PER_S = 300
JOB_CHUNK = 5000
# The steady part: between these percentiles of the items' start times.
STEADY = (10, 90)


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
    parser.add_argument(
        "--scenario", choices=("all", "fan", "rate"), default="all", help="which scenario(s) to run"
    )
    parser.add_argument(
        "--rate-lanes",
        type=int,
        default=None,
        help="rate: lanes per worker process (default 50; 20 with --quick)",
    )
    parser.add_argument("--rate-procs", type=int, default=None, help="rate: worker processes (default 1)")
    parser.add_argument("--rate-delay", type=float, default=None, help="rate: seconds per item (default 0.5)")
    parser.add_argument(
        "--rate-seconds",
        type=float,
        default=None,
        help="rate: seconds of work submitted at the offered rate (default 60; 15 with --quick)",
    )
    parser.add_argument(
        "--controls", default="1,2", help="rate: control-process counts to run, comma-separated"
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
    if args.scenario in ("all", "fan"):
        run_fan(ctx, args)
    if args.scenario in ("all", "rate"):
        for controls in [int(c) for c in str(args.controls).split(",") if c.strip()]:
            run_rate(ctx, args, controls)


def run_fan(ctx: Context, args: argparse.Namespace) -> None:
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
        # The lag in two parts, split at the report's own `at` (the item's finished_at: when the
        # worker made the report, after writing the manifest): the worker's part, then the stream
        # and the control side's.
        worker_part, control_part = [], []
        for item_id, to_status, attempt, at in events:
            item = items[item_id]
            if to_status == "succeeded":
                manifest = s.manifest(job["id"], item_id, attempt)
                if manifest:
                    succeeded_lag.append(at.timestamp() - manifest["finished_at"])
                    if item["finished_at"]:
                        reported = datetime.fromisoformat(item["finished_at"]).timestamp()
                        worker_part.append(reported - manifest["finished_at"])
                        control_part.append(at.timestamp() - reported)
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
            worker_part_p99=round(percentile(worker_part, 99), 3),
            control_part_p99=round(percentile(control_part, 99), 3),
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


MACHINE = "(machine)"


def machine_cpu() -> float:
    """CPU seconds the whole machine spent busy (not idle, not waiting for I/O) since boot."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0.0
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICK


class CpuSampler(threading.Thread):
    """CPU seconds used so far by each named process group, sampled once a second with the time;
    also this benchmark's own process ("bench") and the whole machine (MACHINE)."""

    def __init__(self, leaders: dict[int, str], every_s: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.leaders = {**leaders, **{pid: name for name, pid in PG_GROUP.items()}, os.getpid(): "bench"}
        self.every_s = every_s
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.stop = threading.Event()

    def sample(self) -> None:
        self.samples.append((time.time(), {**group_cpu(self.leaders), MACHINE: machine_cpu()}))

    def run(self) -> None:
        self.sample()
        while not self.stop.wait(self.every_s):
            self.sample()
        self.sample()

    def between(self, a: float, b: float) -> tuple[float, float, dict[str, float]]:
        """The samples closest inside [a, b]: (from, to, CPU seconds by name used in between)."""
        inside = [x for x in self.samples if a <= x[0] <= b] or self.samples
        (t0, c0), (t1, c1) = inside[0], inside[-1]
        return t0, t1, {name: c1.get(name, 0.0) - c0.get(name, 0.0) for name in c1}


class WindowSampler(threading.Thread):
    """Twice a second: what the scheduler has in flight for the jobs and what the workers hold.

    broker: messages in Redis no worker took yet; held: messages a worker took and has not started
    (its lanes' next items); slots: what the workers announce (the window is WINDOW_FACTOR times
    that, within WINDOW_MIN..WINDOW_MAX); queued and running: the jobs' counts in Postgres (running
    includes items whose end is not applied yet); reports: reports in the stream not applied yet
    (applied ones are deleted)."""

    QUEUE = "wan_local"

    def __init__(self, s: BenchSystem, job_ids: list[str]) -> None:
        super().__init__(daemon=True)
        self.r = redis.Redis.from_url(s.stack.redis_url)
        self.conn = pg_connect(s.db_url)
        self.job_ids = job_ids
        self.samples: list[dict[str, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        keys = [self.QUEUE, *(f"{self.QUEUE}:{i}" for i in range(1, 10))]
        with self.conn.cursor() as cur:
            while not self.stop.wait(0.5):
                pipe = self.r.pipeline(transaction=False)
                for key in keys:
                    pipe.llen(key)
                pipe.zcard(HELD_KEY)
                pipe.hgetall(CONSUMERS_KEY)
                pipe.xlen(REPORTS_KEY)
                *lengths, held, consumers, reports = pipe.execute()
                slots = 0
                for raw in consumers.values():
                    entry = json.loads(raw)
                    if self.QUEUE in entry.get("queues", []):
                        slots += int(entry.get("slots") or 0)
                cur.execute(
                    "SELECT coalesce(sum(n_queued), 0), coalesce(sum(n_running), 0) FROM jobs WHERE id = ANY(%s)",
                    (self.job_ids,),
                )
                queued, running = cur.fetchone()
                self.samples.append(
                    {
                        "at": time.time(),
                        "broker": sum(lengths),
                        "held": held,
                        "slots": slots,
                        "queued": int(queued),
                        "running": int(running),
                        "reports": reports,
                    }
                )
        self.conn.close()

    def summary(self, a: float, b: float) -> dict[str, float]:
        inside = [x for x in self.samples if a <= x["at"] <= b]
        if not inside:
            return {}

        def mean(key: str) -> float:
            return round(sum(x[key] for x in inside) / len(inside), 1)

        return {
            "slots_announced": mean("slots"),
            "window_factor": float(os.environ.get("WINDOW_FACTOR") or 1.0),
            "in_flight_mean": round(sum(x["queued"] + x["running"] for x in inside) / len(inside), 1),
            "running_mean": mean("running"),
            "held_mean": mean("held"),
            "broker_waiting_mean": mean("broker"),
            "broker_empty_share": round(sum(1 for x in inside if x["broker"] == 0) / len(inside), 2),
            "reports_waiting_mean": mean("reports"),
            "reports_waiting_max": max(x["reports"] for x in inside),
        }


def _submit_all(s: BenchSystem, keys: list[str], n: int, delay: float) -> list[str]:
    ids = []
    for start in range(0, n, JOB_CHUNK):
        count = min(JOB_CHUNK, n - start)
        job = s.api.submit(
            [keys[(start + i) % len(keys)] for i in range(count)],
            params={"queue": "wan_local", "delay_s": delay},
        )
        ids.append(job["id"])
    return ids


def run_rate(ctx: Context, args: argparse.Namespace, controls: int) -> None:
    """Workers finishing short items at a fixed offered rate against `controls` control processes."""
    lanes = args.rate_lanes or (20 if ctx.quick else 75)
    procs = args.rate_procs or 2
    delay = args.rate_delay if args.rate_delay is not None else 0.5
    seconds = args.rate_seconds or (15.0 if ctx.quick else 60.0)
    offered = procs * lanes / delay
    n = int(round(offered * seconds))
    tag = f"{controls}ctl"
    # Slots a worker process can announce: lanes x (batch 1 + prefetch up to WORKER_MAX_PREFETCH 4).
    window_max = max(2000, procs * lanes * 5 * 2)
    env = {"APPLIER_PARTITIONS": str(controls), "WINDOW_MAX": str(window_max)}
    with system(ctx, f"rate_{tag}", workers=("control",), env=env) as s:
        for i in range(2, controls + 1):
            # Without beat: one schedule per system.
            s.start_worker("control", name=f"control_{i}", concurrency=2)
        names = ["wan_local" if i == 0 else f"wan_local_{i + 1}" for i in range(procs)]
        for name in names:
            s.start_worker("wan_local", name=name, pool="threads", concurrency=lanes)
        keys = s.api.upload([png_bytes(i) for i in range(20)])
        s.api.wait(s.api.submit(keys[:2], params={"queue": "wan_local"})["id"], 120)
        leaders = stack_leaders(s.stack)
        cpu = CpuSampler(leaders)
        cpu.start()
        note(
            f"rate, {controls} control process(es): {procs} worker process(es) x {lanes} lanes, "
            f"items of {delay} s: {offered:g} items/s offered, {n} items"
        )
        t0 = time.time()
        job_ids = _submit_all(s, keys, n, delay)
        submitted_s = time.time() - t0
        window = WindowSampler(s, job_ids)
        window.start()
        deadline = time.monotonic() + 300 + 10 * seconds
        for job_id in job_ids:
            # A job that ends failed is counted below (its items' errors are shown), not fatal.
            s.api.wait(job_id, timeout=max(1.0, deadline - time.monotonic()), every=1.0)
        elapsed = time.time() - t0
        cpu.stop.set()
        window.stop.set()
        cpu.join()
        window.join()

        conn = pg_connect(s.db_url)
        with conn.cursor() as cur:
            cur.execute(
                "SELECT id, job_id, attempt, started_at, finished_at, meta FROM items WHERE job_id = ANY(%s)",
                (job_ids,),
            )
            items = cur.fetchall()
            cur.execute(
                "SELECT item_id, to_status, at, detail FROM events WHERE job_id = ANY(%s) "
                "AND item_id IS NOT NULL AND to_status IN ('running', 'succeeded')",
                (job_ids,),
            )
            events = cur.fetchall()
            cur.execute(
                "SELECT status, error, count(*) FROM items WHERE job_id = ANY(%s) AND status <> 'succeeded' "
                "GROUP BY status, error",
                (job_ids,),
            )
            unsuccessful = cur.fetchall()
        conn.close()
        for status, error, count in unsuccessful:
            note(f"{count} item(s) {status}: {error}")
        not_succeeded = sum(count for _, _, count in unsuccessful)

        starts = sorted(row[3].timestamp() for row in items if row[3] is not None)
        a, b = percentile(starts, STEADY[0]), percentile(starts, STEADY[1])
        span = b - a
        started = sum(1 for t in starts if a <= t <= b)
        # Lane time spent in the model inside the steady span (each item's model call follows its start).
        model_s = 0.0
        finished: dict[str, float] = {}
        reported: dict[str, float] = {}
        for item_id, job_id, attempt, started_at, finished_at, meta in items:
            manifest = s.manifest(job_id, item_id, attempt)
            if finished_at is not None:
                reported[item_id] = finished_at.timestamp()
            if manifest or finished_at is not None:
                finished[item_id] = manifest["finished_at"] if manifest else finished_at.timestamp()
            if started_at is not None:
                begin = started_at.timestamp()
                end = begin + float((meta or {}).get("model_ms") or 0.0) / 1000
                model_s += max(0.0, min(end, b) - max(begin, a))
        applied_at = [at.timestamp() for _, _, at, _ in events]
        succeeded_at = {item_id: at.timestamp() for item_id, to, at, _ in events if to == "succeeded"}
        # Items the reconciler applied from their manifest (their report was still in the stream).
        recovered = sum(
            1 for _, to, at, detail in events if to == "succeeded" and detail == "recovered from manifest"
        )
        applied_items = sum(1 for t in succeeded_at.values() if a <= t <= b)
        applied_reports = sum(1 for t in applied_at if a <= t <= b)
        per_second: dict[int, int] = {}
        for t in succeeded_at.values():
            if a <= t <= b:
                per_second[int(t)] = per_second.get(int(t), 0) + 1
        steady_ids = [i for i in succeeded_at if i in finished and a <= finished[i] <= b]
        lag = [succeeded_at[i] - finished[i] for i in steady_ids]
        # Split at the report's own `at` (items.finished_at): the worker's part (writing the manifest,
        # making the report), then the stream's and the control side's.
        worker_part = [reported[i] - finished[i] for i in steady_ids if i in reported]
        control_part = [succeeded_at[i] - reported[i] for i in steady_ids if i in reported]
        c0, c1, used = cpu.between(a, b)
        machine = used.pop(MACHINE, 0.0)
        ours = dict(used)
        cpu_span = max(1e-9, c1 - c0)
        cpu_items = max(1, sum(1 for t in succeeded_at.values() if c0 <= t <= c1))
        control_s = sum(v for k, v in used.items() if k.startswith("control"))
        worker_s = sum(v for k, v in used.items() if k.startswith("wan_local"))
        control_ms = control_s * 1000 / cpu_items
        common = {
            "controls": controls,
            "worker_procs": procs,
            "lanes": procs * lanes,
            "delay_s": delay,
            "offered_per_s": round(offered, 1),
            "items": n,
            "steady_s": round(span, 1),
            "not_succeeded": not_succeeded,
        }
        note(
            f"rate, {controls} control process(es), steady {span:.0f} s: {started / span:.0f} items/s started "
            f"of {offered:g} offered, {applied_items / span:.0f} applied; control {control_ms:.2f} ms CPU "
            f"per item; cores used: "
            + ", ".join(f"{k} {v / cpu_span:.2f}" for k, v in sorted(ours.items(), key=lambda kv: -kv[1]))
            + f"; whole machine {machine / cpu_span:.2f} of {os.cpu_count()}"
        )
        emit(
            BENCH,
            f"rate_started_items_per_s_{tag}",
            started / span,
            "items/s",
            of_offered=round(started / span / offered, 3),
            lane_duty=round(model_s / (procs * lanes * span), 3),
            model_s_per_item=round(model_s / max(1, started), 3),
            **window.summary(a, b),
            submit_s=round(submitted_s, 2),
            run_s=round(elapsed, 1),
            **common,
        )
        emit(
            BENCH,
            f"rate_applied_items_per_s_{tag}",
            applied_items / span,
            "items/s",
            reports_per_s=round(applied_reports / span, 1),
            recovered_from_manifest=recovered,
            peak_1s=max(per_second.values(), default=0),
            of_offered=round(applied_items / span / offered, 3),
            **common,
        )
        p99 = percentile(lag, 99)
        emit(
            BENCH,
            f"rate_lag_p99_s_{tag}",
            p99,
            "s",
            target=f"< {LAG_TARGET_S:g}",
            met=p99 < LAG_TARGET_S,
            p50=round(percentile(lag, 50), 3),
            max=round(max(lag, default=float("nan")), 3),
            worker_part_p99=round(percentile(worker_part, 99), 3),
            control_part_p99=round(percentile(control_part, 99), 3),
            control_part_p50=round(percentile(control_part, 50), 3),
            n=len(lag),
            **common,
        )
        emit(
            BENCH,
            f"rate_control_cpu_ms_per_item_{tag}",
            control_ms,
            "ms",
            control_cores_at_300_per_s=round(RATE_TARGET_PER_S * control_ms / 1000, 2),
            postgres_ms_per_item=round(used.get("postgres", 0.0) * 1000 / cpu_items, 2),
            worker_ms_per_item=round(worker_s * 1000 / cpu_items, 2),
            cpu_ms_per_item_by_process={
                k: round(v * 1000 / cpu_items, 2) for k, v in sorted(ours.items(), key=lambda kv: -kv[1])
            },
            cores_by_process={
                k: round(v / cpu_span, 2) for k, v in sorted(ours.items(), key=lambda kv: -kv[1])
            },
            cores_used=round(sum(ours.values()) / cpu_span, 2),
            # Busy cores of the whole machine, and what of that no process of this system used.
            machine_busy_cores=round(machine / cpu_span, 2),
            other_cores=round((machine - sum(ours.values())) / cpu_span, 2),
            machine_cores=os.cpu_count(),
            **common,
        )


def main(argv: list[str] | None = None) -> int:
    return main_for(BENCH, add_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
