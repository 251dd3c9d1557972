"""Recovery: time from `kill -9` of a worker mid-item to that item running again elsewhere.

Two item workers (prefork, one process each) and the control worker with its schedule.
One echo item that takes long enough to be killed mid-run; once it is `running`, the
whole process group of the worker that holds it gets SIGKILL. Recovery is measured from
the kill to the database's `item.running` event of attempt 2 (the other worker took it).

The chain: the lease expires (up to LEASE_TTL_S after the last heartbeat), the reconciler
notices the missing lease (every RECONCILE_INTERVAL_S), moves the item back to pending with
attempt + 1 and publishes it at once; a worker reports it running. (Only after the reconciler
itself lost sight of Redis does it first wait two heartbeats, for leases that vanished with a
Redis restart to be re-taken.)
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from datetime import datetime

from bench.common import Context, emit, main_for, note, png_bytes, system

BENCH = "recovery"


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lease-ttl", type=int, default=None, help="LEASE_TTL_S (default 20; 4 with --quick)"
    )
    parser.add_argument(
        "--fast-reconcile",
        action="store_true",
        help="reconcile every 1 s, as the tests run (default with --quick); otherwise the product's "
        "default (10 s)",
    )


def run(ctx: Context, args: argparse.Namespace) -> None:
    ttl = args.lease_ttl or (4 if ctx.quick else 20)
    env = {"LEASE_TTL_S": str(ttl)}
    if args.fast_reconcile or ctx.quick:
        env.update({"RECONCILE_INTERVAL_S": "1"})
    with system(ctx, "recovery", workers=("control",), env=env, use_postgres=ctx.pg is not None) as s:
        s.start_worker("wan_local", name="wan_a", concurrency=1)
        s.start_worker("wan_local", name="wan_b", concurrency=1)
        settings = s.stack.env
        key = s.api.upload([png_bytes(1)])[0]
        job = s.api.submit([key], params={"delay_s": ttl * 3 + 60, "queue": "wan_local"})
        deadline = time.monotonic() + 60
        item: dict = {}
        while time.monotonic() < deadline:
            item = s.api.items(job["id"])[0]
            if item["status"] == "running" and item["worker"]:
                break
            time.sleep(0.1)
        else:
            raise TimeoutError(f"item never ran: {item}")
        time.sleep(1.0)  # mid-item: the lease has been renewed at least by now
        victim = item["worker"].split("@")[0]
        note(f"kill -9 of worker {victim} (lease TTL {ttl} s)")
        s.stack.procs[victim].signal(signal.SIGKILL)
        killed_at = time.time()
        # The worker's `running` report carries when it took the item (its started_at).
        deadline = time.monotonic() + ttl + 180
        again: dict = {}
        while time.monotonic() < deadline:
            again = s.api.items(job["id"])[0]
            if again["attempt"] >= 2 and again["status"] in ("running", "succeeded") and again["started_at"]:
                break
            time.sleep(0.2)
        else:
            raise TimeoutError(f"the item did not run again: {again}")
        rerun_at = datetime.fromisoformat(again["started_at"]).timestamp()
        for name in ("wan_a", "wan_b"):  # the long item would hold up a warm shutdown
            if name in s.stack.procs:
                s.stack.procs[name].signal(signal.SIGKILL)
        recovery = rerun_at - killed_at
        limit = ttl + 15
        emit(
            BENCH,
            "kill9_to_running_again_s",
            recovery,
            "s",
            target=f"<= lease + 15 = {limit}",
            met=recovery <= limit,
            lease_ttl_s=ttl,
            heartbeat_s=settings.get("HEARTBEAT_S") or ttl / 4,
            reconcile_interval_s=float(settings.get("RECONCILE_INTERVAL_S") or 10),
            new_worker=(again["worker"] or "").split("@")[0],
        )


def main(argv: list[str] | None = None) -> int:
    return main_for(BENCH, add_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
