"""Is a worker serving this queue? Exit 0 if one answers, 1 if none does, 2 if the broker is unreachable.

    python -m app.workercheck --queue wan_local --timeout 5            # any worker, anywhere
    python -m app.workercheck --queue wan_local --this-host            # a Docker HEALTHCHECK
    python -m app.workercheck --this-host                              # this host's worker, any queue

It broadcasts Celery's `active_queues` inspect over the broker (what `celery inspect` does) and counts
the workers that answer and consume the queue. `--this-host` only counts workers whose node name
ends in `@<this hostname>` (Celery's `%h`), so a container checks its own worker, not a neighbour.
Needs only the broker settings: no database. A worker whose pool is busy still answers (the main
process handles remote control); a solo-pool worker does not while it runs a task, so do not use
this check with `-P solo`.
"""

from __future__ import annotations

import argparse
import socket
import sys
from typing import Any

from app.config import QUEUES

OK, NO_WORKER, BROKER_DOWN = 0, 1, 2


def serving(replies: dict[str, Any], queue: str | None, host: str | None = None) -> list[str]:
    """Node names among `replies` (inspect().active_queues()) that consume `queue` (None: any)."""
    names = []
    for node, queues in (replies or {}).items():
        if host is not None and not node.endswith("@" + host):
            continue
        if queue is None or any(isinstance(q, dict) and q.get("name") == queue for q in queues or []):
            names.append(node)
    return sorted(names)


def check(queue: str | None, timeout: float, host: str | None = None) -> tuple[int, str]:
    from app.broker import celery_client

    client = celery_client()
    try:
        with client.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
            replies = client.control.inspect(timeout=timeout, connection=conn).active_queues() or {}
    except Exception as exc:  # noqa: BLE001 - any broker trouble: nobody can be asked
        return BROKER_DOWN, f"broker unreachable: {type(exc).__name__}: {exc}"
    names = serving(replies, queue, host)
    where = f" on {host}" if host else ""
    what = queue or "any queue"
    if not names:
        answered = ", ".join(sorted(replies)) or "none"
        return NO_WORKER, f"no worker{where} serves {what} (workers that answered: {answered})"
    return OK, f"{what}: {len(names)} worker(s){where} answered: {', '.join(names)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.workercheck", description=__doc__.split("\n")[0])
    parser.add_argument("--queue", "-Q", choices=QUEUES, help="the queue to check (default: any)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for answers")
    who = parser.add_mutually_exclusive_group()
    who.add_argument("--this-host", action="store_true", help="only workers named ...@<this hostname>")
    who.add_argument("--host", default=None, help="only workers named ...@HOST")
    parser.add_argument("--quiet", "-q", action="store_true", help="print nothing, only set the exit status")
    args = parser.parse_args(argv)
    host = socket.gethostname() if args.this_host else args.host
    status, message = check(args.queue, args.timeout, host)
    if not args.quiet:
        print(message, file=sys.stdout if status == OK else sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
