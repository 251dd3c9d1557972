"""What the broker knows: queue depths and the workers online per queue."""

from __future__ import annotations

import json
import threading
import time

from app.broker import celery_client
from app.config import QUEUES, settings
from app.coordination import Coordination, redis_client

_lock = threading.Lock()
# `reached`: whether the last broadcast could be sent at all (an empty answer from a reachable
# broker means no worker is online; an unreachable broker means nobody knows).
_workers_cache: dict[str, object] = {"at": 0.0, "value": {}, "reached": False}


def queue_depths() -> dict[str, int | None]:
    """Messages waiting per queue (every priority level); None when the broker is unreachable."""
    try:
        r = redis_client(settings().broker_url)
        pipe = r.pipeline(transaction=False)
        for q in QUEUES:
            pipe.llen(q)
            for step in range(1, 10):
                pipe.llen(f"{q}:{step}")
        values = pipe.execute()
    except Exception:  # noqa: BLE001 - broker down
        return dict.fromkeys(QUEUES)
    return {q: sum(values[i * 10 : (i + 1) * 10]) for i, q in enumerate(QUEUES)}


def reports_waiting() -> int | None:
    """Workers' state reports not yet applied to the database (the control side's backlog)."""
    try:
        return Coordination(redis_client(settings().broker_url)).reports_waiting()
    except Exception:  # noqa: BLE001 - broker down
        return None


def _broadcast(max_age_s: float) -> tuple[dict[str, list[str]], bool]:
    with _lock:
        if time.monotonic() - float(_workers_cache["at"]) < max_age_s:  # type: ignore[arg-type]
            return _workers_cache["value"], bool(_workers_cache["reached"])  # type: ignore[return-value]
    reached = True
    try:
        replies = celery_client().control.inspect(timeout=1.0).active_queues() or {}
    except Exception:  # noqa: BLE001 - broker down: nobody is reachable
        replies, reached = {}, False
    value = {name: [q["name"] for q in queues] for name, queues in replies.items()}
    with _lock:
        _workers_cache.update(at=time.monotonic(), value=value, reached=reached)
    return value, reached


def online_workers(max_age_s: float = 3.0) -> dict[str, list[str]]:
    """Worker name -> queues it consumes, from a short broadcast (cached a few seconds)."""
    return _broadcast(max_age_s)[0]


def workers_on(queue: str) -> int | None:
    """Workers consuming `queue`; None when the broker could not be asked."""
    workers, reached = _broadcast(3.0)
    if not reached:
        return None
    return sum(1 for queues in workers.values() if queue in queues)


def lanes_by_worker() -> dict[str, list[dict[str, object]]]:
    """Online worker name -> what each of its devices announced: device, state (loading, ready,
    broken, draining), error, current item."""
    from app.coordination import DEVICES_KEY

    online = online_workers()
    try:
        entries = redis_client(settings().broker_url).hgetall(DEVICES_KEY)
    except Exception:  # noqa: BLE001 - broker down
        return {}
    found: dict[str, list[dict[str, object]]] = {}
    for field, raw in entries.items():
        node = field.decode().rsplit("/", 1)[0]
        if node in online:
            found.setdefault(node, []).append(json.loads(raw))
    return {
        node: sorted(lanes, key=lambda e: (e.get("pid", 0), e.get("lane", 0)))
        for node, lanes in found.items()
    }


def workers_by_queue(
    workers: dict[str, list[str]], lanes: dict[str, list[dict[str, object]]]
) -> dict[str, list[str]]:
    """Queue -> workers consuming it, and those that will once their model loads (or are broken)."""
    found: dict[str, set[str]] = {q: set() for q in QUEUES}
    for worker, queues in workers.items():
        for q in queues:
            found.setdefault(q, set()).add(worker)
    for worker, entries in lanes.items():
        for entry in entries:
            for q in entry.get("queues") or []:  # type: ignore[union-attr]
                found.setdefault(str(q), set()).add(worker)
    return {q: sorted(names) for q, names in found.items()}
