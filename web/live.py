"""Waiting for a job (`Prefer: wait=N`) and the job's event stream (Server-Sent Events).

Both are woken by the job's Redis channel (app/services/notify.py: one PUBLISH per commit that
changed the job), never by polling the database, and neither holds a database connection while it
waits: each database read is short and followed by `db.session.close()`, which hands the
connection back to the pool (Flask-SQLAlchemy 3 scopes the session to the app context; a closed
session opens a new transaction on its next use). A waiting request or an open stream still holds
one gunicorn thread (docs/deploy.md).

Order matters: subscribe first, then read. A change committed between the read and the subscribe
would otherwise be missed until the deadline.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import Iterator
from typing import Any

import redis
from flask import Response, request, stream_with_context
from sqlalchemy import func, select
from sqlalchemy.orm import joinedload

from app.config import settings
from app.coordination import redis_client
from app.db import db
from app.models import FINISHED, Event, Item, Job
from app.serializers import ITEM_COLUMNS, item_json, job_json, live_progress
from app.services.notify import JOBS_CHANNEL, job_channel
from web.errors import ApiError

log = logging.getLogger(__name__)

MAX_WAIT_S = 60
HEARTBEAT_S = 15.0
PROGRESS_S = 1.0
# Reads of one stream are at least this far apart: a burst of notifications becomes one read, and an
# open page costs at most one read a second while its job changes (what polling cost every second).
MIN_READ_GAP_S = 1.0
# Event ids come from one sequence shared by all writers, and a transaction may commit after one
# that took a later id. A stream therefore looks this many ids back on each read (skipping the ids
# it has already seen), so an event committed late is still sent.
LOOK_BACK = 200
EVENTS_PER_READ = 5000

_WAIT_RE = re.compile(r"(?:^|[,;\s])wait\s*=\s*\"?(-?\d+)\"?", re.IGNORECASE)


def prefer_wait() -> int | None:
    """Seconds asked for by `Prefer: wait=N` (RFC 7240), clamped to 1..60; None when not asked.

    A larger N is clamped to 60 (not refused), and `Preference-Applied` says what was applied."""
    header = request.headers.get("Prefer")
    if not header:
        return None
    match = _WAIT_RE.search(header)
    if not match:
        return None
    seconds = int(match.group(1))
    if seconds <= 0:
        return None
    return min(seconds, MAX_WAIT_S)


def applied(response: Response, seconds: int | None) -> Response:
    if seconds:
        response.headers["Preference-Applied"] = f"wait={seconds}"
        response.headers.add("Vary", "Prefer")
    return response


def _pubsub(job_id: str | None) -> Any:
    """Subscribed to one job's channel, or to every job's changes (None)."""
    pubsub = redis_client(settings().broker_url).pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(job_channel(job_id) if job_id is not None else JOBS_CHANNEL)
    return pubsub


def _release() -> None:
    """Hand the connection back to the pool (the session is reusable afterwards)."""
    db.session.close()


def _job_status(job_id: str) -> str | None:
    try:
        return db.session.execute(select(Job.status).where(Job.id == job_id)).scalar()
    finally:
        _release()


def wait_for_job(job_id: str, seconds: float) -> None:
    """Return when the job has finished, does not exist, or `seconds` have passed."""
    deadline = time.monotonic() + seconds
    pubsub = None
    try:
        try:
            pubsub = _pubsub(job_id)
        except redis.RedisError as exc:
            # No notifications: degrade to a slow re-read rather than failing the request.
            log.warning("waiting without notifications (Redis: %s)", exc)
        while True:
            status = _job_status(job_id)
            if status is None or status in FINISHED:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if pubsub is None:
                time.sleep(min(1.0, remaining))
                continue
            try:
                # Block until a notification (or the deadline); drain what else came meanwhile.
                while remaining > 0 and pubsub.get_message(timeout=remaining) is None:
                    remaining = deadline - time.monotonic()
                while pubsub.get_message(timeout=0) is not None:
                    pass
            except redis.RedisError as exc:
                log.warning("notifications lost while waiting (Redis: %s)", exc)
                _close(pubsub)
                pubsub = None
    finally:
        _close(pubsub)


def _close(pubsub: Any) -> None:
    if pubsub is not None:
        with contextlib.suppress(Exception):  # closing a broken connection
            pubsub.close()


# --- the event stream ---------------------------------------------------------------------


def _event_stream(chunks: Iterator[str]) -> Response:
    response = Response(stream_with_context(chunks), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass events through at once
    return response


def _sse(event: str | None, data: Any, event_id: int | None = None) -> str:
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event:
        lines.append(f"event: {event}")
    lines.append("data: " + json.dumps(data, separators=(",", ":")))
    return "\n".join(lines) + "\n\n"


class JobStream:
    """One client's view of a job: its window of items and the last event id it was sent."""

    def __init__(self, job_id: str, last_event_id: int | None, offset: int, limit: int) -> None:
        self.job_id = job_id
        self.resume = last_event_id
        self.offset = offset
        self.limit = limit
        self.last_id = last_event_id or 0
        self.seen: set[int] = set()
        self.running: dict[str, int] = {}  # item id -> attempt, of the window's running items
        self.job: dict[str, Any] = {}
        self.more = False  # the last read stopped at EVENTS_PER_READ: read again at once

    def _window(self, query: Any) -> Any:
        return query.where(Item.idx >= self.offset, Item.idx < self.offset + self.limit)

    def _track(self, items: list[Any]) -> None:
        for item in items:
            if item.status == "running":
                self.running[item.id] = item.attempt
            else:
                self.running.pop(item.id, None)

    def _job_row(self) -> Job | None:
        return db.session.get(Job, self.job_id, options=[joinedload(Job.creator)], populate_existing=True)

    def first(self) -> list[str]:
        """On (re)connect: a full job snapshot; fresh, with the window's items (as GET /jobs/{id});
        resumed after Last-Event-ID, the items changed since, then the snapshot."""
        try:
            if self.resume is None:
                self.last_id = (
                    db.session.execute(
                        select(func.coalesce(func.max(Event.id), 0)).where(Event.job_id == self.job_id)
                    ).scalar()
                    or 0
                )
                job = self._job_row()
                if job is None:
                    return []
                items = []
                if self.limit:
                    query = self._window(select(*ITEM_COLUMNS).where(Item.job_id == self.job_id))
                    items = list(db.session.execute(query.order_by(Item.idx)))
                self._track(items)
                self.job = job_json(job, items)
                self.job["items_offset"] = self.offset
                self.job["last_event_id"] = self.last_id
                return [_sse("job", self.job, self.last_id)]
            return self.changes(look_back=False)
        finally:
            _release()

    def changes(self, look_back: bool = True) -> list[str]:
        """Items whose events are newer than the last sent, then the job snapshot."""
        try:
            low = self.last_id - LOOK_BACK if look_back else self.last_id
            rows = db.session.execute(
                select(Event.id, Event.item_id)
                .where(Event.job_id == self.job_id, Event.id > low)
                .order_by(Event.id)
                .limit(EVENTS_PER_READ)
            ).all()
            self.more = len(rows) == EVENTS_PER_READ
            fresh = [r for r in rows if r.id not in self.seen]
            item_ids = {r.item_id for r in fresh if r.item_id}
            if fresh:
                self.last_id = max(self.last_id, max(r.id for r in fresh))
                self.seen.update(r.id for r in fresh)
                self.seen = {i for i in self.seen if i > self.last_id - LOOK_BACK}
            job = self._job_row()
            if job is None:
                return []
            items = []
            if item_ids and self.limit:
                query = self._window(select(*ITEM_COLUMNS).where(Item.id.in_(sorted(item_ids))))
                items = list(db.session.execute(query.order_by(Item.idx)))
            self._track(items)
            progress = live_progress(dict(self.running))
            out = []
            if items:
                out.append(
                    _sse("items", {"items": [item_json(i, progress, job) for i in items]}, self.last_id)
                )
            self.job = job_json(job, running_progress=sum(progress.values()))
            self.job["last_event_id"] = self.last_id
            out.append(_sse("job", self.job, self.last_id))
            return out
        finally:
            _release()

    def progress(self) -> str | None:
        """Progress of the window's running items, from Redis only."""
        if not self.running or not self.job:
            return None
        found = live_progress(dict(self.running))
        counts = self.job.get("counts") or {}
        done = sum(int(counts.get(s, 0)) for s in FINISHED)
        total = int(self.job.get("total") or 0)
        overall = round(min(1.0, (done + sum(found.values())) / total), 4) if total else 0.0
        return _sse("progress", {"items": {k: round(v, 4) for k, v in found.items()}, "progress": overall})

    @property
    def finished(self) -> bool:
        return self.job.get("status") in FINISHED


def last_event_id() -> int | None:
    raw = request.headers.get("Last-Event-ID") or request.args.get("last_event_id")
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(
            400, "invalid_parameter", "Last-Event-ID must be an integer", "last_event_id"
        ) from None
    if value < 0:
        raise ApiError(400, "invalid_parameter", "Last-Event-ID must not be negative", "last_event_id")
    return value


def stream_response(job_id: str, offset: int, limit: int) -> Response:
    """The job's event stream; the caller has checked that the job exists."""
    resume = last_event_id()
    _release()
    try:
        pubsub = _pubsub(job_id)
    except redis.RedisError as exc:
        log.warning("no job stream (Redis: %s)", exc)
        raise ApiError(503, "unavailable", "live updates are unavailable; poll the job instead") from None
    state = JobStream(job_id, resume, offset, limit)
    max_s = settings().stream_max_s

    def generate() -> Iterator[str]:
        try:
            started = time.monotonic()
            yield "retry: 2000\n\n"
            chunks = state.first()
            if not chunks:
                return
            yield "".join(chunks)
            last_read = time.monotonic()
            next_beat = last_read + HEARTBEAT_S
            next_progress = last_read + PROGRESS_S
            while not state.finished:
                now = time.monotonic()
                if now - started >= max_s:
                    return  # EventSource reconnects with Last-Event-ID
                wake = min(next_beat, started + max_s)
                if state.running:
                    wake = min(wake, next_progress)
                notified = state.more
                if not notified:
                    notified = pubsub.get_message(timeout=max(0.0, wake - now)) is not None
                if notified:
                    gap = MIN_READ_GAP_S - (time.monotonic() - last_read)
                    if gap > 0:
                        time.sleep(gap)
                    while pubsub.get_message(timeout=0) is not None:
                        pass
                    yield "".join(state.changes())
                    last_read = time.monotonic()
                    next_beat = last_read + HEARTBEAT_S
                    continue
                now = time.monotonic()
                if state.running and now >= next_progress:
                    chunk = state.progress()
                    next_progress = now + PROGRESS_S
                    if chunk:
                        yield chunk
                        next_beat = now + HEARTBEAT_S
                        continue
                if now >= next_beat:
                    yield ": keep-alive\n\n"
                    next_beat = now + HEARTBEAT_S
        except redis.RedisError as exc:
            log.warning("job stream ended (Redis: %s)", exc)
        finally:
            _close(pubsub)
            _release()

    return _event_stream(generate())


# --- every job's changes (pages that list jobs) --------------------------------------------

# Pages re-render on `changed`; a burst of commits becomes one event per this many seconds.
CHANGES_GAP_S = 1.0


def changes_response() -> Response:
    """`changed` events naming the jobs that changed (at most one event a second), heartbeats, and
    nothing from the database: the dashboard and the job list re-render when told, not on a timer."""
    _release()
    try:
        pubsub = _pubsub(None)
    except redis.RedisError as exc:
        log.warning("no changes stream (Redis: %s)", exc)
        raise ApiError(503, "unavailable", "live updates are unavailable; poll instead") from None
    max_s = settings().stream_max_s

    def generate() -> Iterator[str]:
        try:
            started = time.monotonic()
            yield "retry: 2000\n\n: connected\n\n"
            next_beat = started + HEARTBEAT_S
            while time.monotonic() - started < max_s:
                now = time.monotonic()
                message = pubsub.get_message(timeout=max(0.0, min(next_beat, started + max_s) - now))
                if message is None:
                    if time.monotonic() >= next_beat:
                        yield ": keep-alive\n\n"
                        next_beat = time.monotonic() + HEARTBEAT_S
                    continue
                changed = set(_ids(message))
                time.sleep(CHANGES_GAP_S)  # gather what else changes meanwhile
                while (more := pubsub.get_message(timeout=0)) is not None:
                    changed.update(_ids(more))
                yield _sse("changed", {"jobs": sorted(changed)[:1000], "count": len(changed)})
                next_beat = time.monotonic() + HEARTBEAT_S
        except redis.RedisError as exc:
            log.warning("changes stream ended (Redis: %s)", exc)
        finally:
            _close(pubsub)

    return _event_stream(generate())


def _ids(message: dict[str, Any]) -> list[str]:
    data = message.get("data") or b""
    text = data.decode() if isinstance(data, bytes) else str(data)
    return [i for i in text.split(",") if i]
