"""The Workers page: every worker process of the running system, from what each one announces.

Each worker process renews its entry in `bulkgen:consumers` every heartbeat (its queues, kind, state,
the items it runs), and a GPU worker one entry per lane in `bulkgen:devices` (device, model, state,
current item). `build` turns those entries and the items each worker finished in the last hour
(Postgres) into rows; it is a pure function. An entry not renewed for a few heartbeats is `lost` (the
process died or cannot reach Redis); after GONE_AFTER_S it is dropped. A process that exits cleanly
removes its entries itself (tasks/runtime.py `stop_announcing`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from app.config import settings
from app.coordination import CONSUMERS_KEY, DEVICES_KEY, redis_client
from app.db import db
from app.models import Item, utcnow

log = logging.getLogger(__name__)

# Entries older than this are no longer listed, and removed from Redis.
GONE_AFTER_S = 300.0
# Celery's remote control: the worker's answer to "drain" (tasks/signals.py).
DRAIN_COMMAND = "drain"


def lost_after_s(heartbeat_s: float) -> float:
    """No heartbeat for this long: lost (the scheduler stops counting its slots at the same age)."""
    return max(10.0, 3 * heartbeat_s)


def ago(seconds: float | None) -> str:
    """ "3 s", "4 min", "2 h 5 min"."""
    if seconds is None:
        return "–"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    return f"{s // 3600} h {s % 3600 // 60} min"


@dataclass
class Running:
    item_id: str
    job_id: str | None
    for_s: float | None


@dataclass
class Lane:
    """One device of a GPU worker, or the whole of a worker without lanes."""

    key: str
    index: int | None
    worker: str  # the name its items record as their worker
    device: str
    models: list[str]
    state: str  # loading / ready / busy / broken / draining / lost
    error: str | None
    running: list[Running]
    done: int
    failed: int
    heartbeat_s: float | None


@dataclass
class Process:
    name: str  # node/pid
    node: str  # Celery's node name (what remote control is sent to)
    host: str
    pid: int | None
    kind: str  # gpu / api / control
    queues: list[str]
    state: str
    heartbeat_s: float | None
    lanes: list[Lane] = field(default_factory=list)

    @property
    def done(self) -> int:
        return sum(lane.done for lane in self.lanes)

    @property
    def failed(self) -> int:
        return sum(lane.failed for lane in self.lanes)

    @property
    def lost(self) -> bool:
        return self.state == "lost"


@dataclass
class Listing:
    processes: list[Process]
    # Entries past GONE_AFTER_S: (consumer fields, device fields), for the caller to remove.
    expired: tuple[list[str], list[str]] = ([], [])


def _age(entry: dict[str, Any], now: float) -> float | None:
    try:
        return max(0.0, now - float(entry["at"]))
    except (KeyError, TypeError, ValueError):
        return None


def _gone(age: float | None) -> bool:
    """Not renewed for GONE_AFTER_S, or unreadable."""
    return age is None or age > GONE_AFTER_S


def _lane_state(state: str, busy: bool, draining: bool) -> str:
    if state in ("loading", "broken"):
        return state
    if draining or state == "draining":
        return "draining"
    return "busy" if busy else "ready"


def build(
    consumers: dict[str, dict[str, Any]],
    devices: dict[str, dict[str, Any]],
    counts: dict[str, dict[str, int]],
    now: float,
    heartbeat_s: float,
) -> Listing:
    """Worker processes from their announcements: `consumers` ("node/pid" -> entry), `devices`
    ("node/pid#lane" -> entry) and `counts` (worker name -> {"succeeded": n, "failed": n} finished
    in the last hour), ordered by host, queue and name."""
    lost_after = lost_after_s(heartbeat_s)
    gone_consumers = [k for k, e in consumers.items() if _gone(_age(e, now))]
    gone_devices = [k for k, e in devices.items() if _gone(_age(e, now))]
    lanes_of: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for key, entry in devices.items():
        if key not in gone_devices:
            lanes_of.setdefault(key.rsplit("#", 1)[0], []).append((key, entry))
    names = {k for k in consumers if k not in gone_consumers} | set(lanes_of)
    processes = []
    for name in names:
        entry = consumers.get(name) if name not in gone_consumers else None
        entry = entry or {}
        lanes = sorted(lanes_of.get(name, []), key=lambda x: int(x[1].get("lane") or 0))
        node = str(entry.get("node") or name.rsplit("/", 1)[0])
        pid_text = name.rsplit("/", 1)[-1]
        pid = entry.get("pid") or (int(pid_text) if pid_text.isdigit() else None)
        queues = list(entry.get("queues") or (lanes[0][1].get("queues") if lanes else []) or [])
        kind = str(entry.get("kind") or ("gpu" if lanes else ("control" if queues == ["control"] else "api")))
        ages = [
            a
            for a in [_age(entry, now) if entry else None] + [_age(e, now) for _, e in lanes]
            if a is not None
        ]
        beat = min(ages) if ages else None
        draining = entry.get("state") == "draining"
        process = Process(
            name=name,
            node=node,
            host=node.split("@", 1)[1] if "@" in node else node,
            pid=int(pid) if pid is not None else None,
            kind=kind,
            queues=sorted(queues),
            state="ready",
            heartbeat_s=beat,
        )
        for key, e in lanes:
            worker = str(e.get("worker") or (name if len(lanes) == 1 else f"{name}#{e.get('lane', 0)}"))
            item = e.get("current_item")
            since = e.get("current_since")
            age = _age(e, now)
            state = _lane_state(str(e.get("state") or "ready"), bool(e.get("busy") or item), draining)
            if age is None or age > lost_after:
                state = "lost"
            process.lanes.append(
                Lane(
                    key=key,
                    index=int(e.get("lane") or 0),
                    worker=worker,
                    device=str(e.get("device") or "GPU"),
                    models=list(e.get("models") or []),
                    state=state,
                    error=e.get("error"),
                    running=[Running(str(item), e.get("current_job"), now - float(since) if since else None)]
                    if item
                    else [],
                    done=int(counts.get(worker, {}).get("succeeded", 0)),
                    failed=int(counts.get(worker, {}).get("failed", 0)),
                    heartbeat_s=age,
                )
            )
        if not lanes:
            worker = str(entry.get("worker") or name)
            running = [
                Running(str(r.get("item")), r.get("job"), now - float(r["since"]) if r.get("since") else None)
                for r in entry.get("current") or []
                if r.get("item")
            ]
            process.lanes.append(
                Lane(
                    key=name,
                    index=None,
                    worker=worker,
                    device=str(entry.get("device") or ("API" if kind == "api" else "CPU")),
                    models=list(entry.get("models") or []),
                    state=_lane_state(str(entry.get("state") or "ready"), bool(running), draining),
                    error=None,
                    running=running,
                    done=int(counts.get(worker, {}).get("succeeded", 0)),
                    failed=int(counts.get(worker, {}).get("failed", 0)),
                    heartbeat_s=_age(entry, now),
                )
            )
        process.state = _process_state(process, entry, beat, lost_after)
        processes.append(process)
    processes.sort(key=lambda p: (p.host, p.queues[0] if p.queues else "", p.node, p.pid or 0))
    return Listing(processes, (gone_consumers, gone_devices))


def _process_state(process: Process, entry: dict[str, Any], beat: float | None, lost_after: float) -> str:
    if beat is None or beat > lost_after:
        return "lost"
    states = [lane.state for lane in process.lanes if lane.state != "lost"]
    if entry.get("state") == "draining" or "draining" in states:
        return "draining"
    if not states:
        return "lost"
    for state in ("busy", "ready", "loading"):
        if state in states:
            return state
    return "broken"


# --- reading the running system ------------------------------------------------------------------


def _entries(raw: dict[bytes, bytes]) -> dict[str, dict[str, Any]]:
    out = {}
    for key, value in raw.items():
        try:
            entry = json.loads(value)
        except ValueError:
            entry = None
        out[key.decode(errors="replace")] = entry if isinstance(entry, dict) else {}
    return out


def announcements() -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """(consumers, devices) as announced now; raises when Redis is unreachable."""
    pipe = redis_client(settings().broker_url).pipeline(transaction=False)
    pipe.hgetall(CONSUMERS_KEY)
    pipe.hgetall(DEVICES_KEY)
    consumers, devices = pipe.execute()
    return _entries(consumers), _entries(devices)


def finished_last_hour(workers: list[str]) -> dict[str, dict[str, int]]:
    """Worker name -> items it finished in the last hour, per status (succeeded, failed)."""
    if not workers:
        return {}
    since = utcnow() - timedelta(hours=1)
    rows = db.session.execute(
        select(Item.worker, Item.status, func.count())
        .where(
            Item.status.in_(("succeeded", "failed")),
            Item.updated_at >= since,
            Item.finished_at >= since,
            Item.worker.in_(workers),
        )
        .group_by(Item.worker, Item.status)
    ).all()
    counts: dict[str, dict[str, int]] = {}
    for worker, status, n in rows:
        counts.setdefault(worker, {})[status] = int(n)
    return counts


def workers_now(now: float) -> Listing | None:
    """The listing of the running system; None when Redis is unreachable."""
    try:
        consumers, devices = announcements()
    except Exception as exc:  # noqa: BLE001 - broker down: the page says so
        log.warning("cannot read the workers' announcements: %s", exc)
        return None
    s = settings()
    first = build(consumers, devices, {}, now, float(s.heartbeat_s))
    names = sorted({lane.worker for p in first.processes for lane in p.lanes})
    listing = build(consumers, devices, finished_last_hour(names), now, float(s.heartbeat_s))
    gone_consumers, gone_devices = listing.expired
    try:
        pipe = redis_client(s.broker_url).pipeline(transaction=False)
        if gone_consumers:
            pipe.hdel(CONSUMERS_KEY, *gone_consumers)
        if gone_devices:
            pipe.hdel(DEVICES_KEY, *gone_devices)
        pipe.execute()
    except Exception as exc:  # noqa: BLE001 - removed next time
        log.warning("cannot remove gone workers' announcements: %s", exc)
    return listing


def drain(node: str, timeout_s: float = 2.0) -> bool:
    """Ask the worker `node` to drain (finish its running items, take no new one, exit): True when it
    answered. The worker does what SIGTERM does (tasks/signals.py `drain`)."""
    from app.broker import celery_client

    replies = celery_client().control.broadcast(
        DRAIN_COMMAND, destination=[node], reply=True, timeout=timeout_s, limit=1
    )
    return any(node in reply for reply in replies or [])
