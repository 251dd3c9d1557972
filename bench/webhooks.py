"""Webhooks: what sending them costs the system, how late they arrive, and whether a receiver that
hangs holds up anyone else.

Three runs on one system (control worker + two one-lane echo workers, as `throughput` runs them):
1. N echo items, no webhook: the job's wall time (submit -> finished_at).
2. The same with `item.completed` + `job.completed` to a receiver on loopback that answers at once:
   the job's wall time again (the outbox rows are written in the applier's transactions), the
   delivery lag of each item (receipt - the item's finished_at) and of `job.completed`, duplicates.
3. Run 2 again (N/4 items) while 20 one-item jobs send `job.completed` to a receiver that holds
   every request for 30 s (past WEBHOOK_TIMEOUT_S=10): the fast receiver's lag with them hanging.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bench.common import BenchSystem, Context, emit, main_for, note, percentile, png_bytes, system

BENCH = "webhooks"


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=None, help="items (default 2000; 200 with --quick)")


class Receiver:
    """Records (receipt time, webhook-id, body) per delivery; answers after `hold_s`."""

    def __init__(self, hold_s: float = 0.0) -> None:
        self.got: list[tuple[float, str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)))
                with receiver.lock:
                    receiver.got.append((time.time(), self.headers.get("webhook-id", ""), body))
                if hold_s:
                    time.sleep(hold_s)
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.got) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        if len(self.got) < count:
            raise TimeoutError(f"{len(self.got)} of {count} deliveries after {timeout} s")


@contextmanager
def receiver(hold_s: float = 0.0) -> Iterator[Receiver]:
    r = Receiver(hold_s)
    try:
        yield r
    finally:
        r.server.shutdown()


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def run_job(s: BenchSystem, n: int, keys: list[str], **fields: Any) -> tuple[dict[str, Any], float]:
    inputs = [keys[i % len(keys)] for i in range(n)]
    t0 = time.time()
    job = s.api.submit(inputs, **fields)
    done = s.api.wait(job["id"], timeout=120 + n)
    return done, epoch(done["finished_at"]) - t0


def lags(s: BenchSystem, r: Receiver, job: dict[str, Any]) -> dict[str, Any]:
    finished = {i["id"]: epoch(i["finished_at"]) for i in s.api.items(job["id"])}
    item_lag = [
        at - finished[body["data"]["id"]] for at, _, body in r.got if body["type"] == "item.completed"
    ]
    job_at = [at for at, _, body in r.got if body["type"] == "job.completed"]
    ids = [msg for _, msg, _ in r.got]
    return {
        "item_p50": percentile(item_lag, 50),
        "item_p99": percentile(item_lag, 99),
        "job": job_at[0] - epoch(job["finished_at"]) if job_at else None,
        "duplicates": len(ids) - len(set(ids)),
        "span": max(at for at, _, _ in r.got) - min(at for at, _, _ in r.got),
    }


def run(ctx: Context, args: argparse.Namespace) -> None:
    n = args.n or (200 if ctx.quick else 2000)
    env = {"WEBHOOK_ALLOW_PRIVATE": "1", "WEBHOOK_TIMEOUT_S": "10"}
    with system(ctx, "webhooks", workers=("control",), env=env) as s:
        for name in ("wan_local_0", "wan_local_1"):
            s.start_worker("wan_local", name=name, concurrency=1)
        keys = s.api.upload([png_bytes(i) for i in range(10)])
        run_job(s, 4, keys)  # warm up

        note(f"{n} echo items without a webhook")
        _, plain_s = run_job(s, n, keys)
        emit(BENCH, "job_without_webhook_s", plain_s, "s", n=n, items_per_s=round(n / plain_s, 1))

        note(f"{n} echo items with item.completed + job.completed")
        events = ["item.completed", "job.completed"]
        with receiver() as fast:
            done, hooked_s = run_job(s, n, keys, webhook=fast.url, webhook_events=events)
            fast.wait(n + 1, timeout=300)
            got = lags(s, fast, done)
        emit(BENCH, "job_with_webhook_s", hooked_s, "s", n=n, items_per_s=round(n / hooked_s, 1))
        emit(BENCH, "webhook_cost", hooked_s / plain_s, "x", n=n, note="job wall time with / without")
        emit(BENCH, "item_completed_lag_p50_s", got["item_p50"], "s", n=n)
        emit(BENCH, "item_completed_lag_p99_s", got["item_p99"], "s", n=n)
        emit(BENCH, "job_completed_lag_s", got["job"], "s", n=n)
        emit(BENCH, "deliveries_per_s_one_job", (n + 1) / got["span"], "/s", n=n)
        emit(
            BENCH,
            "duplicate_deliveries",
            got["duplicates"],
            "deliveries",
            target="0",
            met=got["duplicates"] == 0,
        )

        m = max(20, n // 4)
        note(f"{m} items to a fast receiver while 20 jobs' receiver holds every request 30 s")
        with receiver(hold_s=30.0) as slow, receiver() as fast:
            for i in range(20):
                s.api.submit([keys[i % len(keys)]], webhook=slow.url)
            slow.wait(4, timeout=120)  # its first requests are being held
            done, _ = run_job(s, m, keys, webhook=fast.url, webhook_events=events)
            fast.wait(m + 1, timeout=300)
            got = lags(s, fast, done)
            held = len(slow.got)
        emit(BENCH, "beside_hanging_item_lag_p99_s", got["item_p99"], "s", n=m, hanging_requests_seen=held)
        emit(BENCH, "beside_hanging_job_completed_lag_s", got["job"], "s", n=m)


def main(argv: list[str] | None = None) -> int:
    return main_for(BENCH, add_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
