"""Sending webhook deliveries from the control side.

`Sender.tick()` runs every second in the control worker (its webhook sender thread). It claims the
deliveries that are due, one per job at a time and oldest first (so a job's events arrive in order),
and hands them to a thread pool; the tick itself returns at once, so a slow receiver never holds up
the other control work.
A claim is a lease written to the row (`next_attempt_at` moved past the request's timeout): if the
process dies mid-request the delivery comes due again and is sent with the same `webhook-id`.

Isolation between receivers: a bounded pool per process, and at most `webhook_per_host` requests
in flight per destination (host:port), so one receiver that hangs takes a few threads for at most
the timeout, never the pool. Redirects are not followed (a 3xx is a failed attempt), and every
new connection resolves the destination itself, refuses internal addresses and connects only to
an address it checked (pinned_session).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import requests
from flask import Flask
from requests.adapters import HTTPAdapter
from sqlalchemy import select, update
from sqlalchemy.orm import aliased, joinedload
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from app.config import settings
from app.db import db
from app.models import Item, Job, User, WebhookDelivery, utcnow
from app.serializers import ITEM_COLUMNS, iso, item_json, job_json
from app.services.webhooks import (
    DestinationRefused,
    resolve_checked,
    signature,
    signing_secrets,
)

log = logging.getLogger(__name__)

# How long past the request's timeout a claimed delivery stays claimed.
CLAIM_MARGIN_S = 30.0
# A job's deliveries claimed at once after one went through (sent one after another).
RUN = 20
USER_AGENT = "bulkgen-webhooks/1"


@dataclass
class Claimed:
    id: int
    job_id: str
    msg_id: str
    url: str
    destination: str
    body: str
    keys: list[str]


@dataclass
class Outcome:
    status_code: int | None
    error: str | None
    latency_ms: float
    give_up: bool = False  # the destination is refused: retrying cannot help

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def _fix_payloads(rows: list[WebhookDelivery]) -> None:
    """Give each row without one its body: the event and the job or item as the API shows it, fixed
    at the first attempt. Items are read in one query."""
    todo = [d for d in rows if d.payload is None]
    item_ids = sorted({d.item_id for d in todo if d.item_id is not None})
    items = (
        {row.id: row for row in db.session.execute(select(*ITEM_COLUMNS).where(Item.id.in_(item_ids)))}
        if item_ids
        else {}
    )
    for d in todo:
        if d.item_id is not None:
            item = items.get(d.item_id)
            data: dict[str, Any] = (
                item_json(item) if item is not None else {"id": d.item_id, "job_id": d.job_id}
            )
        else:
            job = db.session.get(Job, d.job_id, options=[joinedload(Job.creator)])
            data = job_json(job) if job is not None else {"id": d.job_id}
        body = {"type": d.event, "timestamp": iso(d.created_at), "data": data}
        d.payload = json.dumps(body, separators=(",", ":"), default=str)


def claim(limit: int, busy: Counter[str], per_host: int) -> list[Claimed]:
    """Claim up to `limit` due deliveries, the oldest pending one of each job, skipping destinations
    that already have `per_host` requests in flight here. Commits the claims."""
    now = utcnow()
    earlier = aliased(WebhookDelivery)
    blocked = (
        select(earlier.id)
        .where(
            earlier.job_id == WebhookDelivery.job_id,
            earlier.status == "pending",
            earlier.id < WebhookDelivery.id,
        )
        .exists()
    )
    full = [host for host, n in busy.items() if n >= per_host]
    query = select(WebhookDelivery).where(
        WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now, ~blocked
    )
    if full:
        query = query.where(WebhookDelivery.destination.not_in(full))
    rows = list(
        db.session.scalars(
            query.order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
            .limit(limit * 2)
            .with_for_update(skip_locked=True, of=WebhookDelivery)
        )
    )
    chosen = []
    for d in rows:
        if len(chosen) < limit and busy[d.destination] < per_host:
            busy[d.destination] += 1
            chosen.append(d)
    return _take(chosen, now)


def claim_run(job_id: str, limit: int = RUN) -> list[Claimed]:
    """After a delivery of `job_id` went through: claim the job's next pending deliveries, in order,
    as long as they are due. The caller sends them one after another. Commits."""
    now = utcnow()
    rows = list(
        db.session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.job_id == job_id, WebhookDelivery.status == "pending")
            .order_by(WebhookDelivery.id)
            .limit(limit)
            # Wait for a row another transaction holds (a redeliver) rather than skip it: skipping
            # would send the one after it first.
            .with_for_update()
        )
    )
    run = []
    for d in rows:
        due = d.next_attempt_at
        if due.tzinfo is None:  # SQLite hands back naive UTC datetimes
            due = due.replace(tzinfo=now.tzinfo)
        if due > now:  # not due (or claimed elsewhere): stop
            break
        run.append(d)
    return _take(run, now)


def _take(rows: list[WebhookDelivery], now: datetime) -> list[Claimed]:
    """Claim `rows`: fix each body, pick the signing keys, and lease each for as long as the ones
    before it in the list may take. Commits."""
    timeout = settings().webhook_timeout_s
    taken: list[Claimed] = []
    users: dict[str, list[str]] = {}
    _fix_payloads(rows)
    for position, d in enumerate(rows):
        if d.job_id not in users:
            creator = db.session.scalar(select(Job.created_by).where(Job.id == d.job_id))
            user = db.session.get(User, creator) if creator is not None else None
            users[d.job_id] = signing_secrets(user) if user is not None else []
        d.next_attempt_at = now + timedelta(seconds=timeout * (position + 1) + CLAIM_MARGIN_S)
        taken.append(Claimed(d.id, d.job_id, d.msg_id, d.url, d.destination, d.payload, users[d.job_id]))
    db.session.commit()
    return taken


def release(claimed: list[Claimed]) -> None:
    """Give back claims that will not be sent now (they come due at once; the caller commits)."""
    if claimed:
        db.session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_([c.id for c in claimed]), WebhookDelivery.status == "pending")
            .values(next_attempt_at=utcnow())
        )


class _Pinned:
    """A connection that resolves its host itself, refuses it if any address is internal, and
    connects to a checked address: the name cannot point somewhere else between the check and the
    connection (DNS rebinding). TLS still verifies the certificate against the host name."""

    _dns_host: str
    port: int

    def _new_conn(self) -> Any:
        self._dns_host = resolve_checked(self._dns_host, self.port)[0]
        return super()._new_conn()  # type: ignore[misc]


class _PinnedHTTPConnection(_Pinned, HTTPConnection):
    pass


class _PinnedHTTPSConnection(_Pinned, HTTPSConnection):
    pass


class _PinnedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _PinnedHTTPConnection


class _PinnedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _PinnedHTTPSConnection


class _PinnedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _PinnedHTTPPool, "https": _PinnedHTTPSPool}


def pinned_session() -> requests.Session:
    """A requests session whose connections go only to checked addresses. Proxies from the
    environment are not used: through a proxy, the address connected to would be the proxy's."""
    session = requests.Session()
    session.trust_env = False
    adapter = _PinnedAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


_local = threading.local()


def _http() -> requests.Session:
    """A session per sender thread: a job's deliveries go one after another to one receiver, so
    keeping its connection alive saves a handshake each."""
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = pinned_session()
    return session


def send(c: Claimed, timeout_s: float) -> Outcome:
    """One attempt: POST the body, signed, without following redirects. The URL's form was checked at
    submission; its address is checked by the connection itself (pinned_session)."""
    started = time.monotonic()
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": c.msg_id,
        "webhook-timestamp": str(timestamp),
    }
    if c.keys:
        headers["webhook-signature"] = signature(c.msg_id, timestamp, c.body, c.keys)
    try:
        response = _http().post(
            c.url, data=c.body.encode(), headers=headers, timeout=timeout_s, allow_redirects=False
        )
        response.close()
        latency = (time.monotonic() - started) * 1000
        error = None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
        return Outcome(response.status_code, error, latency)
    except DestinationRefused as exc:  # the name resolved to an internal address at connect time
        return Outcome(None, str(exc), (time.monotonic() - started) * 1000, give_up=True)
    except requests.RequestException as exc:
        return Outcome(None, f"{type(exc).__name__}: {exc}"[:500], (time.monotonic() - started) * 1000)


def record_outcomes(results: list[tuple[Claimed, Outcome]]) -> str:
    """Write attempts' outcomes (the caller commits); returns the last one's new status."""
    if not results:
        return "gone"
    now = utcnow()
    rows = {
        d.id: d
        for d in db.session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.id.in_([c.id for c, _ in results]))
            .order_by(WebhookDelivery.id)
            .with_for_update()
        )
    }
    status = "gone"
    delays = settings().webhook_retry_delays_s
    for c, outcome in results:
        d = rows.get(c.id)
        if d is None:  # its job was deleted meanwhile
            status = "gone"
            continue
        d.attempts += 1
        d.last_attempt_at = now
        d.last_status_code = outcome.status_code
        d.last_error = outcome.error
        d.last_latency_ms = round(outcome.latency_ms, 1)
        if outcome.ok:
            d.status = "delivered"
            d.delivered_at = now
        else:
            d.failures += 1
            if outcome.give_up or d.failures > len(delays):
                d.status = "failed"
            else:
                # A little jitter so deliveries that failed together do not all come back at once.
                delay = delays[d.failures - 1] * random.uniform(0.9, 1.1)
                d.next_attempt_at = now + timedelta(seconds=delay)
        status = d.status
        if not outcome.ok:
            log.info(
                "webhook %s %s attempt %d: %s (%.0f ms) -> %s",
                d.msg_id,
                d.event,
                d.attempts,
                outcome.status_code or outcome.error,
                outcome.latency_ms,
                status,
            )
    return status


def redeliver(delivery: WebhookDelivery) -> None:
    """Send a delivery again (same webhook-id), now, with a fresh round of retries."""
    delivery.status = "pending"
    delivery.failures = 0
    delivery.next_attempt_at = utcnow()


class Sender:
    """A control process's pool of webhook requests (one per process, shared by its ticks)."""

    def __init__(self, app: Flask) -> None:
        s = settings()
        self.app = app
        self.capacity = s.webhook_concurrency
        self.per_host = s.webhook_per_host
        self.timeout_s = s.webhook_timeout_s
        self.pool = ThreadPoolExecutor(max_workers=self.capacity, thread_name_prefix="webhook")
        self.lock = threading.Lock()
        self.busy: Counter[str] = Counter()
        self.in_flight = 0

    def tick(self) -> int:
        """Claim what is due and start sending it; returns how many were started."""
        with self.lock:
            room = self.capacity - self.in_flight
            busy = Counter(self.busy)
        if room <= 0:
            return 0
        claimed = claim(room, busy, self.per_host)
        for c in claimed:
            with self.lock:
                self.in_flight += 1
                self.busy[c.destination] += 1
            self.pool.submit(self._deliver, c)
        return len(claimed)

    def _deliver(self, c: Claimed) -> None:
        """Send `c`; while that works, go straight on with the same job's next due deliveries, a run
        at a time (a job's deliveries go one at a time, and waiting for the next tick would cap a job
        at one a second). A run's outcomes are written in one transaction, with the next run's claim.
        This thread's slot for the destination carries over to them."""
        run = [c]
        try:
            while run:
                results: list[tuple[Claimed, Outcome]] = []
                for current in run:
                    outcome = send(current, self.timeout_s)
                    results.append((current, outcome))
                    if not outcome.ok:
                        break
                with self.app.app_context():
                    try:
                        status = record_outcomes(results)
                        release(run[len(results) :])  # they wait behind the one that failed
                        if status == "delivered":
                            run = claim_run(c.job_id)  # commits the outcomes with the claims
                        else:
                            db.session.commit()
                            run = []
                    finally:
                        db.session.remove()
        except Exception:  # noqa: BLE001 - the claims expire and the deliveries are sent again
            log.exception("webhook delivery %s failed unexpectedly", c.msg_id)
        finally:
            with self.lock:
                self.in_flight -= 1
                self.busy[c.destination] -= 1
                if self.busy[c.destination] <= 0:
                    del self.busy[c.destination]


_sender: Sender | None = None
_sender_lock = threading.Lock()


def sender(app: Flask) -> Sender:
    global _sender
    with _sender_lock:
        if _sender is None:
            _sender = Sender(app)
        return _sender
