"""The baseline: a database-polling task queue of the common "next task" kind, written minimally.

A Flask app (served by gunicorn like the product's web) keeps tasks in one Postgres
table. Workers ask it over HTTP for the next task; it claims one row with
`SELECT ... FOR UPDATE SKIP LOCKED`, marks it running and hands it out; the worker runs it
and reports the result over HTTP, which marks the row succeeded. An idle worker sleeps
POLL_S before asking again.

    gunicorn 'bench.dbqueue:create_app()'            (DBQ_DATABASE_URL names the database)
    python -m bench.dbqueue worker --url http://127.0.0.1:PORT --name w1
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2
import psycopg2.pool
import requests

POLL_S = 0.1

SCHEMA = """
CREATE TABLE IF NOT EXISTS dbq_jobs (
    id bigserial PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS dbq_tasks (
    id bigserial PRIMARY KEY,
    job_id bigint NOT NULL REFERENCES dbq_jobs(id),
    idx integer NOT NULL,
    status text NOT NULL DEFAULT 'queued',
    payload jsonb NOT NULL,
    result jsonb,
    worker text,
    attempts integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    claimed_at timestamptz,
    finished_at timestamptz
);
CREATE INDEX IF NOT EXISTS dbq_tasks_queued ON dbq_tasks (id) WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS dbq_tasks_job_status ON dbq_tasks (job_id, status);
"""

CLAIM = """
UPDATE dbq_tasks SET status = 'running', worker = %s, claimed_at = now(), attempts = attempts + 1
WHERE id = (
    SELECT id FROM dbq_tasks WHERE status = 'queued' ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1
)
RETURNING id, job_id, idx, payload
"""


def create_schema(database_url: str) -> None:
    conn = psycopg2.connect(database_url)
    with conn, conn.cursor() as cur:
        cur.execute(SCHEMA)
    conn.close()


def create_app() -> Any:
    from flask import Flask, Response, jsonify, request

    app = Flask("dbqueue")
    pool = psycopg2.pool.ThreadedConnectionPool(1, 10, os.environ["DBQ_DATABASE_URL"])

    @contextmanager
    def cursor() -> Iterator[Any]:
        conn = pool.getconn()
        try:
            with conn, conn.cursor() as cur:  # one transaction, committed on success
                yield cur
        finally:
            pool.putconn(conn)

    @app.post("/jobs")
    def submit() -> tuple[Response, int]:
        inputs = request.get_json()["inputs"]
        with cursor() as cur:
            cur.execute("INSERT INTO dbq_jobs DEFAULT VALUES RETURNING id")
            job_id = cur.fetchone()[0]
            cur.execute(
                "INSERT INTO dbq_tasks (job_id, idx, payload) "
                "SELECT %s, g.n - 1, jsonb_build_object('input_key', g.key) "
                "FROM unnest(%s::text[]) WITH ORDINALITY AS g(key, n)",
                (job_id, inputs),
            )
        return jsonify({"id": job_id, "total": len(inputs)}), 201

    @app.get("/jobs/<int:job_id>")
    def job(job_id: int) -> Response:
        with cursor() as cur:
            cur.execute("SELECT status, count(*) FROM dbq_tasks WHERE job_id = %s GROUP BY status", (job_id,))
            counts = dict(cur.fetchall())
        return jsonify({"id": job_id, "counts": counts})

    @app.post("/claim")
    def claim() -> Response:
        with cursor() as cur:
            cur.execute(CLAIM, (request.get_json()["worker"],))
            row = cur.fetchone()
        if row is None:
            return Response(status=204)
        return jsonify({"id": row[0], "job_id": row[1], "idx": row[2], "payload": row[3]})

    @app.post("/tasks/<int:task_id>/done")
    def done(task_id: int) -> Response:
        result = request.get_json().get("result")
        with cursor() as cur:
            cur.execute(
                "UPDATE dbq_tasks SET status = 'succeeded', result = %s, finished_at = now() "
                "WHERE id = %s AND status = 'running'",
                (json.dumps(result), task_id),
            )
            updated = cur.rowcount
        return jsonify({"updated": updated})

    return app


def work(base_url: str, name: str, stop: threading.Event | None = None) -> None:
    """Claim, run (a no-op, like the bare-Celery task), report; sleep POLL_S when idle."""
    s = requests.Session()
    while stop is None or not stop.is_set():
        try:
            r = s.post(f"{base_url}/claim", json={"worker": name}, timeout=30)
        except requests.RequestException:
            time.sleep(POLL_S)
            continue
        if r.status_code == 204:
            time.sleep(POLL_S)
            continue
        task = r.json()
        result = {"outcome": "succeeded", "input_key": task["payload"].get("input_key")}
        s.post(f"{base_url}/tasks/{task['id']}/done", json={"result": result}, timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dbqueue")
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("worker")
    w.add_argument("--url", required=True)
    w.add_argument("--name", default=f"w{os.getpid()}")
    w.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    threads = [
        threading.Thread(target=work, args=(args.url, f"{args.name}-{i}"), daemon=True)
        for i in range(args.threads)
    ]
    for t in threads:
        t.start()
    print("dbqueue worker ready.", flush=True)
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
