"""Bulk submit: one job of 10,000 inputs.

Measures how long `POST /api/v1/jobs` takes to answer, and what reaches the broker: since the
scheduler (app/services/scheduler.py) only the queue's window -- as many items as its workers
can hold (here none consume it: WINDOW_MIN) -- is published, and the rest waits `pending` in
Postgres. For reference, the time a plain `apply_async` loop takes to put all N messages into
the same Redis (what publishing the whole job used to cost).

The inputs are N distinct uploaded images: their asset rows are inserted with SQL (the
API checks inputs against them), which is what N earlier uploads leave behind.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid

import redis
import sqlalchemy as sa

from app.models import utcnow
from bench.bare import make_app
from bench.common import BenchSystem, Context, emit, main_for, note, system
from bench.throughput import fake_payload

BENCH = "bulk_submit"
QUEUE = "wan_local"
LOOP_QUEUE = "bench_publish"


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--n", type=int, default=None, help="inputs in the job (default 10000; 1000 with --quick)"
    )


def sa_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg2://", 1)


def insert_assets(s: BenchSystem, n: int) -> list[str]:
    keys = []
    rows = []
    now = utcnow()
    for _ in range(n):
        digest = uuid.uuid4().hex + uuid.uuid4().hex
        key = f"inputs/{digest[:2]}/{digest}.png"
        keys.append(key)
        rows.append(
            {
                "key": key,
                "filename": "img.png",
                "size": 100,
                "ct": "image/png",
                "w": 32,
                "h": 32,
                "sha": digest,
            }
        )
    engine = sa.create_engine(sa_url(s.db_url))
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO assets (key, filename, size, content_type, width, height, sha256, created_at) "
                "VALUES (:key, :filename, :size, :ct, :w, :h, :sha, :now)"
            ),
            [{**r, "now": now} for r in rows],
        )
    engine.dispose()
    return keys


def depth(r: redis.Redis, queue: str) -> int:
    """Messages in a queue over every priority level (kombu's Redis priority lists)."""
    pipe = r.pipeline(transaction=False)
    pipe.llen(queue)
    for step in range(1, 10):
        pipe.llen(f"{queue}:{step}")
    return sum(pipe.execute())


def run(ctx: Context, args: argparse.Namespace) -> None:
    n = args.n or (1000 if ctx.quick else 10000)
    with system(ctx, "bulk", workers=("control",)) as s:
        r = redis.Redis.from_url(s.stack.redis_url)
        keys = insert_assets(s, n)
        # Warm-up: one small job to a queue nobody consumes.
        s.api.submit(keys[:2], params={"queue": "runway"})
        note(f"system: submitting one job of {n} inputs")
        t0 = time.time()
        job = s.api.submit(keys, params={"queue": QUEUE})
        answered = time.time() - t0
        deadline = time.monotonic() + 60
        counts: dict[str, int] = {}
        while time.monotonic() < deadline:
            counts = s.api.job(job["id"])["counts"]
            if counts["queued"] >= 1 and depth(r, QUEUE) >= counts["queued"]:
                break
            time.sleep(0.05)
        else:
            raise TimeoutError(f"bulk job's window not published: {counts}, depth {depth(r, QUEUE)}")
        window_s = time.time() - t0
        emit(BENCH, "api_answer_s", answered, "s", target="< 1", met=answered < 1, n=n)
        emit(
            BENCH,
            "window_published_s",
            window_s,
            "s",
            n=n,
            broker_messages=depth(r, QUEUE),
            pending_in_postgres=counts["pending"],
        )

        celery = make_app(s.stack.redis_url)
        task = celery.tasks["bench.items_run"]
        payloads = [fake_payload(k) for k in keys]
        task.apply_async(args=[payloads[0]], queue=LOOP_QUEUE, priority=3)  # connect before timing
        note(f"plain apply_async loop: {n} messages")
        t0 = time.time()
        for p in payloads:
            task.apply_async(args=[p], task_id=p["item_id"], queue=LOOP_QUEUE, priority=3)
        loop_s = time.time() - t0
        assert depth(r, LOOP_QUEUE) >= n
        emit(BENCH, "apply_async_loop_s", loop_s, "s", n=n, note="all N messages, for reference")


def main(argv: list[str] | None = None) -> int:
    return main_for(BENCH, add_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
