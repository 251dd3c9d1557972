"""API latency on Postgres: p50/p99 of `GET /api/v1/jobs/{id}` for a 1,000-item job and of
`GET /api/v1/jobs?limit=50`, with 100,000 items in the database.

The rows are inserted with SQL (finished jobs of `echo` items, each with one output, as the
control worker leaves them); the web app is the product's gunicorn (2 workers x 4 threads).
Requests are sequential over one keep-alive connection, timed at the client.
"""

from __future__ import annotations

import argparse
import sys
import time

from bench.common import Api, BenchSystem, Context, emit, main_for, note, percentile, pg_connect, system

BENCH = "api_latency"
TARGET_MS = 25.0

SEED_JOBS = """
INSERT INTO jobs (id, provider, model, prompt, prompts, params, priority, status, total,
                  n_pending, n_queued, n_running, n_succeeded, n_failed, n_cancelled,
                  created_by, created_at, started_at, finished_at)
SELECT gen_random_uuid()::text, 'echo', 'echo', NULL, '[]'::json, '{"queue": "wan_local"}'::json,
       'normal', 'succeeded', %(size)s, 0, 0, 0, %(size)s, 0, 0, %(user)s,
       now() - make_interval(secs => g * 60 + %(offset)s),
       now() - make_interval(secs => g * 60 + %(offset)s - 5),
       now() - make_interval(secs => g * 60 + %(offset)s - 50)
FROM generate_series(1, %(count)s) AS g
RETURNING id
"""

SEED_ITEMS = """
INSERT INTO items (id, job_id, idx, input_key, provider, queue, status, attempt, max_attempts,
                   outputs, manifest_key, meta, worker, device, progress, duration_ms,
                   created_at, queued_at, started_at, finished_at, updated_at)
SELECT x.id, x.job_id, x.idx, 'inputs/' || left(md5(x.id), 2) || '/' || md5(x.id) || '.png',
       'echo', 'wan_local', 'succeeded', 1, 3,
       json_build_array(json_build_object(
           'key', 'outputs/' || x.job_id || '/' || x.id || '/1/echo.png',
           'content_type', 'image/png', 'role', 'echo', 'size', 1234)),
       'outputs/' || x.job_id || '/' || x.id || '/1/manifest.json',
       json_build_object('model_ms', 1.5, 'overhead_ms', 12.5),
       'wan_local@gpu-host/4242', 'GPU 0: NVIDIA H200, 143771 MiB', 1.0, 14.0,
       j.created_at, j.created_at, j.started_at, j.finished_at, j.finished_at
FROM (SELECT gen_random_uuid()::text AS id, jobs.id AS job_id, g AS idx
      FROM jobs, generate_series(0, jobs.total - 1) AS g) AS x
JOIN jobs j ON j.id = x.job_id
"""


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--items", type=int, default=None, help="items in the database (default 100000)")
    parser.add_argument(
        "--requests", type=int, default=None, help="timed requests per endpoint (default 300)"
    )


def seed(s: BenchSystem, total_items: int, big: int = 1000, per_job: int = 100) -> str:
    conn = pg_connect(s.db_url)
    with conn.cursor() as cur:
        cur.execute("SELECT id FROM users ORDER BY id LIMIT 1")
        user = cur.fetchone()[0]
        small = max(0, (total_items - big) // per_job)
        cur.execute(SEED_JOBS, {"size": per_job, "user": user, "offset": 3600, "count": small})
        cur.execute(SEED_JOBS, {"size": big, "user": user, "offset": 0, "count": 1})
        big_id = cur.fetchone()[0]
        cur.execute(SEED_ITEMS)
        cur.execute("ANALYZE")
        cur.execute("SELECT count(*) FROM items")
        note(f"seeded {cur.fetchone()[0]} items in {small + 1} jobs")
    conn.close()
    return big_id


def timed(api: Api, path: str, n: int, warm: int = 20) -> list[float]:
    for _ in range(warm):
        api.get(path).raise_for_status()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r = api.get(path)
        out.append((time.perf_counter() - t) * 1000)
        r.raise_for_status()
    return out


def run(ctx: Context, args: argparse.Namespace) -> None:
    if ctx.pg is None:
        note("no Postgres: API latency is measured on Postgres only; skipped")
        return
    total = args.items or (20000 if ctx.quick else 100000)
    n = args.requests or (100 if ctx.quick else 300)
    with system(ctx, "api", workers=()) as s:
        big = seed(s, total)
        cases = [
            # The job read as the API answers it by default: the job and its first page of items.
            ("job_1000_items", f"/api/v1/jobs/{big}", True),
            ("job_list_50", "/api/v1/jobs?limit=50", True),
            # For reference: all 1,000 items in one answer, and the job without items.
            ("job_1000_items_all", f"/api/v1/jobs/{big}?items_limit=1000", False),
            ("job_no_items", f"/api/v1/jobs/{big}?items_limit=0", False),
        ]
        for name, path, has_target in cases:
            ms = timed(s.api, path, n)
            p50, p99 = percentile(ms, 50), percentile(ms, 99)
            extra = {"requests": n, "items_in_db": total}
            emit(BENCH, f"{name}_p50_ms", p50, "ms", **extra)
            if has_target:
                emit(
                    BENCH,
                    f"{name}_p99_ms",
                    p99,
                    "ms",
                    target=f"< {TARGET_MS:g}",
                    met=p99 < TARGET_MS,
                    **extra,
                )
            else:
                emit(BENCH, f"{name}_p99_ms", p99, "ms", **extra)


def main(argv: list[str] | None = None) -> int:
    return main_for(BENCH, add_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
