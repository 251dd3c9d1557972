"""Throughput: N echo items (no delay) through the whole system, side by side with bare Celery
and a database-polling queue.

System: API submit -> broker -> worker -> state reports -> control worker -> items `succeeded`
in the database; timed from the submit request to the job's `finished_at`.
Bare Celery: a no-op task on the same Redis with the same pool and concurrency, N results
collected. DB-polling queue (bench/dbqueue.py): N rows submitted over HTTP, claimed with
SKIP LOCKED and reported over HTTP by as many worker processes/threads; timed to the last
row's `finished_at`.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from datetime import datetime
from typing import Any

import requests
from celery.result import ResultSet

from bench.bare import QUEUE as BARE_QUEUE
from bench.bare import make_app
from bench.common import (
    BenchSystem,
    Context,
    CpuMeter,
    create_database,
    drop_database,
    emit,
    main_for,
    note,
    pg_connect,
    png_bytes,
    stack_leaders,
    system,
)
from bench.dbqueue import create_schema
from bulkgen_stack.processes import free_port, wait_port

BENCH = "throughput"


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=None, help="items (default 2000; 200 with --quick)")
    parser.add_argument("--pool", default="prefork", help="worker pool for the item worker and bare Celery")
    parser.add_argument("--concurrency", type=int, default=2, help="worker concurrency (both)")


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def fake_payload(key: str) -> dict[str, Any]:
    """The shape of the product's item message, for the comparisons."""
    return {
        "item_id": str(uuid.uuid4()),
        "job_id": "bench",
        "attempt": 1,
        "provider": "echo",
        "model": "echo",
        "input_key": key,
        "prompt": None,
        "prompts": [],
        "params": {"queue": "wan_local"},
        "deadline_s": 10800,
    }


def run_system(s: BenchSystem, n: int, keys: list[str]) -> dict[str, Any]:
    params = {"queue": "wan_local"}
    warm = s.api.submit(keys[:4], params=params)
    s.api.wait(warm["id"], 120)
    inputs = [keys[i % len(keys)] for i in range(n)]
    note(f"system: submitting {n} echo items")
    cpu = CpuMeter(stack_leaders(s.stack))
    cpu.start()
    t0 = time.time()
    job = s.api.submit(inputs, params=params)
    answered = time.time() - t0
    done = s.api.wait(job["id"], timeout=120 + n / 2, every=0.25)
    if done["status"] != "succeeded":
        raise RuntimeError(f"throughput job ended {done['status']}: {done['counts']}")
    elapsed = epoch(done["finished_at"]) - t0
    cpu.stop()
    # When the workers finished (last manifest) vs when the database knew: shows where the tail goes.
    last_manifest = 0.0
    items = s.api.items(job["id"])
    queued = [epoch(i["queued_at"]) for i in items if i["queued_at"]]
    for item in items:
        manifest = s.manifest(job["id"], item["id"], item["attempt"])
        if manifest:
            last_manifest = max(last_manifest, manifest["finished_at"])
    return {
        "elapsed": elapsed,
        "answered": answered,
        "all_queued": (max(queued) - t0) if queued else float("nan"),
        "workers_done": last_manifest - t0,
        "cpu": cpu,
        # Items whose `running` report was dropped as stale (it raced the pending -> queued update).
        "without_started_at": sum(1 for i in items if not i["started_at"]),
    }


def run_bare(s: BenchSystem, n: int, pool: str, concurrency: int) -> tuple[float, CpuMeter]:
    env = dict(s.stack.env)
    env["BENCH_REDIS_URL"] = s.stack.redis_url
    argv = [sys.executable, "-m", "celery", "-A", "bench.bare", "worker", "-Q", BARE_QUEUE, "-n", "bare@%h"]
    argv += ["-P", pool, "-c", str(concurrency), "--loglevel", "INFO", "--without-gossip", "--without-mingle"]
    s.stack.spawn("bare", argv, env)
    s.stack.wait_workers(["bare"], timeout=120)
    celery = make_app(s.stack.redis_url)
    noop = celery.tasks["bench.noop"]
    warm = ResultSet([noop.apply_async(args=[fake_payload("k")], queue=BARE_QUEUE) for i in range(20)])
    warm.join_native(timeout=60)
    payloads = [fake_payload("inputs/aa/bench.png") for _ in range(n)]
    note(f"bare Celery: {n} no-op tasks, {pool} -c {concurrency}")
    cpu = CpuMeter(stack_leaders(s.stack))
    cpu.start()
    t0 = time.time()
    results = ResultSet([noop.apply_async(args=[p], queue=BARE_QUEUE) for p in payloads])
    results.join_native(timeout=120 + n / 2)
    elapsed = time.time() - t0
    cpu.stop()
    s.stack.stop("bare")
    return elapsed, cpu


def run_dbqueue(ctx: Context, s: BenchSystem, n: int, pool: str, concurrency: int) -> tuple[float, CpuMeter]:
    assert ctx.pg is not None
    db_url = create_database(ctx.pg, "dbqueue")
    try:
        create_schema(db_url)
        port = free_port()
        env = dict(s.stack.env)
        env["DBQ_DATABASE_URL"] = db_url
        web = s.stack.spawn(
            "dbq-web",
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "2",
                "--threads",
                "4",
            ]
            + ["bench.dbqueue:create_app()"],
            env,
        )
        wait_port(port, 30, web)
        base = f"http://127.0.0.1:{port}"
        # Same parallelism as the Celery worker: processes for prefork, threads for a threads pool.
        procs, threads = (1, concurrency) if pool in ("threads", "gevent", "eventlet") else (concurrency, 1)
        names = []
        for i in range(procs):
            name = f"dbq-worker-{i}"
            argv = [sys.executable, "-m", "bench.dbqueue", "worker", "--url", base, "--name", name]
            s.stack.spawn(name, [*argv, "--threads", str(threads)], env)
            names.append(name)
        wait_logged(s, names, "ready.")
        http = requests.Session()
        warm = http.post(f"{base}/jobs", json={"inputs": [f"warm-{i}" for i in range(20)]}).json()
        wait_dbq(http, base, warm["id"], 20, 60)
        note(f"DB-polling queue: {n} tasks, {procs} process(es) x {threads} thread(s)")
        cpu = CpuMeter(
            stack_leaders(s.stack, lambda name: "dbq-workers" if name.startswith("dbq-worker") else name)
        )
        cpu.start()
        t0 = time.time()
        job = http.post(f"{base}/jobs", json={"inputs": [f"inputs/aa/{i}.png" for i in range(n)]}).json()
        wait_dbq(http, base, job["id"], n, 120 + n / 2)
        cpu.stop()
        conn = pg_connect(db_url)
        with conn.cursor() as cur:
            cur.execute("SELECT max(finished_at) FROM dbq_tasks WHERE job_id = %s", (job["id"],))
            last = cur.fetchone()[0].timestamp()
        conn.close()
        for name in [*names, "dbq-web"]:
            s.stack.stop(name)
        return last - t0, cpu
    finally:
        drop_database(ctx.pg, db_url)


def wait_logged(s: BenchSystem, names: list[str], marker: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(marker in s.stack.procs[n].log() for n in names):
            return
        time.sleep(0.1)
    raise TimeoutError(f"{names} not ready")


def wait_dbq(http: requests.Session, base: str, job_id: int, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = http.get(f"{base}/jobs/{job_id}").json()["counts"]
        if counts.get("succeeded", 0) >= n:
            return
        time.sleep(0.1)
    raise TimeoutError(f"DB-polling queue job {job_id}: {counts}")


def emit_cpu(label: str, cpu: CpuMeter, n: int) -> None:
    """CPU per item over every process involved: on a small machine this, not latency, sets the rate."""
    by = {k: v for k, v in sorted(cpu.per(n).items(), key=lambda kv: -kv[1]) if v > 0}
    emit(BENCH, f"{label}_cpu_ms_per_item", cpu.total_per(n), "ms", by_process=by, n=n)


def run(ctx: Context, args: argparse.Namespace) -> None:
    n = args.n or (200 if ctx.quick else 2000)
    pool, conc = args.pool, args.concurrency
    common = {"n": n, "pool": pool, "concurrency": conc}
    with system(ctx, "throughput", workers=("control",)) as s:
        # A GPU-queue worker is one process with a lane per GPU; the same parallelism as the bare
        # Celery worker's processes is one worker process per lane, as for a fast model per GPU.
        item_workers = [f"wan_local_{i}" for i in range(conc)] if pool == "prefork" else ["wan_local"]
        for name in item_workers:
            s.start_worker("wan_local", name=name, concurrency=1 if pool == "prefork" else conc)
        keys = s.api.upload([png_bytes(i) for i in range(10)])
        sys_run = run_system(s, n, keys)
        sys_rate = n / sys_run["elapsed"]
        emit(
            BENCH, "system_items_per_s", sys_rate, "items/s", **common, db="postgres" if ctx.pg else "sqlite"
        )
        emit_cpu("system", sys_run["cpu"], n)
        emit(BENCH, "system_submit_answer_s", sys_run["answered"], "s", n=n)
        # Where the time goes: publishing (all items queued), the workers (last manifest written),
        # then the control worker catching up on reports (job finished in the database).
        emit(BENCH, "system_all_queued_s", sys_run["all_queued"], "s", n=n)
        emit(BENCH, "system_workers_done_s", sys_run["workers_done"], "s", n=n)
        emit(BENCH, "system_db_done_s", sys_run["elapsed"], "s", n=n)
        emit(BENCH, "system_items_without_started_at", sys_run["without_started_at"], "items", n=n)
        # Only Redis stays up for the comparisons.
        for name in (*item_workers, "control", "web"):
            s.stack.stop(name)
        bare_s, bare_cpu = run_bare(s, n, pool, conc)
        bare_rate = n / bare_s
        emit(BENCH, "bare_celery_items_per_s", bare_rate, "items/s", **common)
        emit_cpu("bare_celery", bare_cpu, n)
        ratio = sys_rate / bare_rate
        emit(BENCH, "system_vs_bare_celery", ratio, "x", target=">= 0.5", met=ratio >= 0.5, n=n)
        if ctx.pg is None:
            note("no Postgres: the DB-polling queue comparison is skipped")
            return
        dbq_s, dbq_cpu = run_dbqueue(ctx, s, n, pool, conc)
        dbq_rate = n / dbq_s
        emit(BENCH, "dbqueue_items_per_s", dbq_rate, "items/s", **common)
        emit_cpu("dbqueue", dbq_cpu, n)
        ratio = sys_rate / dbq_rate
        emit(BENCH, "system_vs_dbqueue", ratio, "x", target=">= 5", met=ratio >= 5, n=n)


def main(argv: list[str] | None = None) -> int:
    return main_for(BENCH, add_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
