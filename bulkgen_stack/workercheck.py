"""Is a worker serving this queue? Exit 0 if one answers, 1 if none does, 2 if the broker is unreachable.

    python -m bulkgen_stack.workercheck --queue wan_local --timeout 5            # any worker, anywhere
    python -m bulkgen_stack.workercheck --queue wan_local --this-host            # a Docker HEALTHCHECK
    python -m bulkgen_stack.workercheck --this-host                              # this host's worker, any queue

It broadcasts Celery's `active_queues` inspect over the broker (what `celery inspect` does) and counts
the workers that answer and consume the queue. `--this-host` only counts workers whose node name
ends in `@<this hostname>` (Celery's `%h`), so a container checks its own worker, not a neighbour.
Needs only the broker settings: no database. A worker whose pool is busy still answers (the main
process handles remote control); a solo-pool worker does not while it runs a task, so do not use
this check with `-P solo`.

A GPU host connected as the `gpu-host` Redis user (deploy/redis/gpu-host.acl) may not broadcast: the
ACL refuses it remote control. There the check reads the announcements each worker process renews
every heartbeat (`bulkgen:consumers`) instead, and counts those made within the scheduler's window.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from typing import Any

from app.config import QUEUES, settings

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
        if refused_by_acl(exc):
            return check_announced(queue, host)
        return BROKER_DOWN, f"broker unreachable: {type(exc).__name__}: {exc}"
    names = serving(replies, queue, host)
    where = f" on {host}" if host else ""
    what = queue or "any queue"
    if not names:
        answered = ", ".join(sorted(replies)) or "none"
        return NO_WORKER, f"no worker{where} serves {what} (workers that answered: {answered})"
    return OK, f"{what}: {len(names)} worker(s){where} answered: {', '.join(names)}"


def refused_by_acl(exc: BaseException | None) -> bool:
    """Whether the broker refused this Redis user the command (kombu wraps redis-py's error)."""
    from redis.exceptions import NoPermissionError

    while exc is not None:
        if isinstance(exc, NoPermissionError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def announced(
    entries: dict[bytes, bytes], queue: str | None, host: str | None, now: float, max_age_s: float
) -> list[str]:
    """Node names among `bulkgen:consumers` entries ("node/pid" -> {"queues", "at", ...}) announced within
    `max_age_s`, consuming `queue` (None: any), on `host` (None: any)."""
    names = set()
    for field, raw in entries.items():
        node = field.decode(errors="replace").rsplit("/", 1)[0]
        if host is not None and not node.endswith("@" + host):
            continue
        try:
            entry = json.loads(raw)
            fresh = now - float(entry["at"]) <= max_age_s
        except (ValueError, KeyError, TypeError):
            continue
        if fresh and (queue is None or queue in (entry.get("queues") or [])):
            names.add(node)
    return sorted(names)


def check_announced(queue: str | None, host: str | None) -> tuple[int, str]:
    from app.coordination import CONSUMERS_KEY, redis_client

    s = settings()
    max_age_s = max(10.0, 3 * s.heartbeat_s)
    match = f"*@{host}/*" if host else None
    try:
        entries = dict(redis_client(s.broker_url).hscan_iter(CONSUMERS_KEY, match=match))
    except Exception as exc:  # noqa: BLE001 - any broker trouble: nothing can be read
        return BROKER_DOWN, f"broker unreachable: {type(exc).__name__}: {exc}"
    names = announced(entries, queue, host, time.time(), max_age_s)
    where = f" on {host}" if host else ""
    what = queue or "any queue"
    how = f"announced within {max_age_s:g} s (this Redis user may not broadcast)"
    if not names:
        return NO_WORKER, f"no worker{where} serving {what} {how}"
    return OK, f"{what}: {len(names)} worker(s){where} {how}: {', '.join(names)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bulkgen_stack.workercheck", description=__doc__.split("\n")[0]
    )
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
