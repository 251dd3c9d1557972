"""Webhooks: which destinations are allowed, which events go out, how they are signed.

A job may name a `webhook` URL and the `webhook_events` it wants. When one of those events happens,
a row is added to `webhook_deliveries` in the same transaction as the change itself (an outbox):
the control side sends it later (app/services/webhook_delivery.py), so an event is neither lost nor
sent for a change that rolled back, and no web request or GPU host ever calls out.

Deliveries follow the Standard Webhooks specification (https://www.standardwebhooks.com/): headers
`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of
"{id}.{timestamp}.{body}">`, keyed with the submitting user's secret ("whsec_" + base64 bytes).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import socket
import uuid
from collections.abc import Iterable
from datetime import timedelta
from urllib.parse import urlsplit

from sqlalchemy import insert, select

from app.config import settings
from app.db import db
from app.errors import InvalidInput
from app.models import FINISHED, Job, User, WebhookDelivery, utcnow

# What a receiver can subscribe to. An item "completes" when it succeeds; "fails" when it failed for
# good (no attempt left); the job "completes" when every item finished, whatever the outcome.
EVENTS = ("item.completed", "item.failed", "job.completed")
DEFAULT_EVENTS = ("job.completed",)
MAX_URL = 2000
SECRET_PREFIX = "whsec_"
# After a rotation the previous secret keeps signing (a second signature) for this long.
ROTATION_OVERLAP = timedelta(hours=24)


class DestinationRefused(ValueError):
    """A webhook URL that may not be called (bad form, or an internal address)."""


# --- destinations ---------------------------------------------------------------------------


def _internal(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    # is_global is False for loopback, private, link-local (cloud metadata), shared (100.64/10),
    # reserved and unspecified addresses.
    return not ip.is_global or ip.is_multicast


def destination(url: str) -> str:
    """host:port of a webhook URL (what per-destination limits count)."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"[:300]


def check_destination(url: str, allow_private: bool | None = None) -> list[str]:
    """Raise DestinationRefused unless `url` is an http(s) URL whose host resolves only to public
    addresses (or private ones are allowed). Returns the addresses it resolved to.

    Checked at submission and again before every attempt: a name may resolve elsewhere later."""
    if allow_private is None:
        allow_private = settings().webhook_allow_private
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        raise DestinationRefused(f"webhook must be an http or https URL of at most {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise DestinationRefused(f"webhook is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DestinationRefused("webhook must be an http or https URL with a host name")
    if any(ord(c) < 33 for c in url):
        raise DestinationRefused("webhook must not contain spaces or control characters")
    return resolve_checked(parts.hostname, port, allow_private)


def resolve_checked(host: str, port: int, allow_private: bool | None = None) -> list[str]:
    """The addresses `host` resolves to, or DestinationRefused if it does not resolve or any of them
    is internal (unless private ones are allowed). The sender connects only to addresses this
    returned (webhook_delivery.pinned_session), so a name cannot be re-pointed in between."""
    if allow_private is None:
        allow_private = settings().webhook_allow_private
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise DestinationRefused(f"webhook host {host!r} does not resolve: {exc}") from None
    addresses = sorted({info[4][0] for info in infos})
    if not allow_private:
        internal = [a for a in addresses if _internal(a)]
        if internal:
            raise DestinationRefused(
                f"webhook host {host!r} resolves to an internal address ({internal[0]}): "
                "loopback, private, link-local and metadata addresses are refused "
                "(WEBHOOK_ALLOW_PRIVATE=1 allows them)"
            )
    return addresses


def parse_subscription(url: object, events: object) -> tuple[str | None, list[str] | None]:
    """The submitted `webhook` and `webhook_events`, checked; InvalidInput names the bad field."""
    if url is None:
        if events is not None:
            raise InvalidInput("webhook_events", "webhook_events needs a webhook URL")
        return None, None
    if not isinstance(url, str):
        raise InvalidInput("webhook", "webhook must be a URL string")
    try:
        check_destination(url)
    except DestinationRefused as exc:
        raise InvalidInput("webhook", str(exc)) from None
    if events is None:
        return url, list(DEFAULT_EVENTS)
    if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
        raise InvalidInput("webhook_events", f"webhook_events must be a non-empty list of {list(EVENTS)}")
    unknown = [e for e in events if e not in EVENTS]
    if unknown:
        raise InvalidInput(
            "webhook_events", f"unknown webhook event {unknown[0]!r}; choose from {list(EVENTS)}"
        )
    return url, list(dict.fromkeys(events))


# --- the outbox -----------------------------------------------------------------------------


def webhook_event(kind: str, to_status: str | None) -> str | None:
    """The webhook event an entry of the job's event log stands for, if any."""
    if kind == "item.succeeded":
        return "item.completed"
    if kind == "item.failed":
        return "item.failed"
    if kind == "job.status" and to_status in FINISHED:
        return "job.completed"
    return None


def record(changes: Iterable[tuple[str, str, str | None, str | None]]) -> int:
    """Queue deliveries for (job_id, kind, item_id, to_status) log entries, in the caller's
    transaction. One query for the jobs involved; nothing else when none has a webhook."""
    wanted = [
        (job_id, event, item_id)
        for job_id, kind, item_id, to in changes
        if (event := webhook_event(kind, to))
    ]
    if not wanted:
        return 0
    job_ids = sorted({job_id for job_id, _, _ in wanted})
    subscribed = {
        row.id: row
        for row in db.session.execute(
            select(Job.id, Job.webhook, Job.webhook_events).where(
                Job.id.in_(job_ids), Job.webhook.is_not(None)
            )
        )
    }
    if not subscribed:
        return 0
    now = utcnow()
    rows = [
        {
            "msg_id": "msg_" + uuid.uuid4().hex,
            "job_id": job_id,
            "item_id": item_id,
            "event": event,
            "url": subscribed[job_id].webhook,
            "destination": destination(subscribed[job_id].webhook),
            "status": "pending",
            "attempts": 0,
            "failures": 0,
            "created_at": now,
            "next_attempt_at": now,
        }
        for job_id, event, item_id in wanted
        if job_id in subscribed and event in (subscribed[job_id].webhook_events or DEFAULT_EVENTS)
    ]
    if rows:
        db.session.execute(insert(WebhookDelivery), rows)
    return len(rows)


# --- signing --------------------------------------------------------------------------------


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def secret_of(user: User) -> str:
    """The user's signing secret, made on first use (the caller commits)."""
    if not user.webhook_secret:
        user.webhook_secret = new_secret()
    return user.webhook_secret


def rotate_secret(user: User) -> str:
    """A new secret; the old one keeps signing alongside it for ROTATION_OVERLAP (the caller commits)."""
    user.webhook_secret_previous = user.webhook_secret
    user.webhook_secret_rotated_at = utcnow()
    user.webhook_secret = new_secret()
    return user.webhook_secret


def signing_secrets(user: User) -> list[str]:
    """The secrets a delivery is signed with now: the current one, and the previous one for a day."""
    keys = [secret_of(user)]
    rotated = user.webhook_secret_rotated_at
    if user.webhook_secret_previous and rotated is not None:
        if rotated.tzinfo is None:  # SQLite hands back naive datetimes
            rotated = rotated.replace(tzinfo=utcnow().tzinfo)
        if utcnow() - rotated < ROTATION_OVERLAP:
            keys.append(user.webhook_secret_previous)
    return keys


def signature(msg_id: str, timestamp: int, body: str, keys: Iterable[str]) -> str:
    """The `webhook-signature` header: one "v1,<base64>" per key, separated by spaces."""
    content = f"{msg_id}.{timestamp}.{body}".encode()
    out = []
    for key in keys:
        raw = base64.b64decode(key.removeprefix(SECRET_PREFIX))
        digest = hmac.new(raw, content, hashlib.sha256).digest()
        out.append("v1," + base64.b64encode(digest).decode())
    return " ".join(out)
