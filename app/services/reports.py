"""Applying workers' state reports to Postgres.

Reports arrive at least once and in any order. Each is applied with a fenced,
idempotent update; a report for an attempt the item is no longer on changes nothing.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from app.db import db
from app.models import Item
from app.services.items import move_item

log = logging.getLogger(__name__)

ALIVE = ("pending", "queued", "running")


def _ts(value: Any) -> datetime | None:
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return None


def apply_report(report: dict[str, Any]) -> str | None:
    """Apply one report and commit. Returns the status the item left, or None if it was stale.

    After a retryable failure the item goes back to `pending` with attempt + 1; the
    caller publishes it (the return value tells).
    """
    state = report.get("state")
    item_id = report.get("item_id")
    job_id = report.get("job_id")
    attempt = report.get("attempt")
    if not (isinstance(item_id, str) and isinstance(job_id, str) and isinstance(attempt, int)):
        log.warning("ignoring malformed report %r", report)
        return None
    worker = report.get("worker")
    detail = report.get("detail")
    old: str | None = None
    if state == "running":
        old = move_item(
            item_id,
            job_id,
            "running",
            expect=("queued", "pending"),
            attempt=attempt,
            values={
                "worker": worker,
                "device": report.get("device"),
                "started_at": _ts(report.get("at")),
                "progress": 0.0,
                "lease_lost_at": None,
            },
            worker=worker,
            detail=report.get("device"),
        )
    elif state == "succeeded":
        meta = report.get("meta") or {}
        old = move_item(
            item_id,
            job_id,
            "succeeded",
            expect=ALIVE,
            attempt=attempt,
            values={
                "outputs": report.get("outputs") or [],
                "manifest_key": report.get("manifest_key"),
                "meta": meta,
                "worker": worker,
                "progress": 1.0,
                "error": None,
                "error_code": None,
                "remote_id": meta.get("runway_task_id") or meta.get("remote_id"),
                "cost_usd": meta.get("cost_usd"),
                "duration_ms": report.get("duration_ms"),
                "finished_at": _ts(report.get("at")),
                "lease_lost_at": None,
            },
            worker=worker,
            detail=detail,
        )
    elif state == "cancelled":
        old = move_item(
            item_id,
            job_id,
            "cancelled",
            expect=ALIVE,
            attempt=attempt,
            values={"finished_at": _ts(report.get("at"))},
            worker=worker,
            detail=detail or "stopped by cancel",
        )
    elif state == "failed":
        old = fail_or_retry(
            item_id,
            job_id,
            attempt,
            error=str(report.get("error") or "unknown error")[:4000],
            code=report.get("error_code"),
            retryable=bool(report.get("retryable")),
            worker=worker,
            at=_ts(report.get("at")),
        )
    else:
        log.warning("ignoring report with unknown state %r", state)
    db.session.commit()
    return old


def fail_or_retry(
    item_id: str,
    job_id: str,
    attempt: int,
    *,
    error: str,
    code: str | None,
    retryable: bool,
    worker: str | None,
    at: datetime | None = None,
) -> str | None:
    """A failed attempt: back to pending with attempt + 1 while attempts remain, else failed."""
    item = db.session.get(Item, item_id)
    if item is None or item.attempt != attempt:
        return None
    if retryable and attempt < item.max_attempts:
        return move_item(
            item_id,
            job_id,
            "pending",
            expect=ALIVE,
            attempt=attempt,
            values={
                "attempt": attempt + 1,
                "error": error,
                "error_code": code,
                "progress": 0.0,
                "lease_lost_at": None,
            },
            kind="item.retry",
            worker=worker,
            detail=f"attempt {attempt} failed: {error}",
            event_attempt=attempt + 1,
        )
    if retryable:
        error = f"{error} (gave up after {attempt} attempts)"
    return move_item(
        item_id,
        job_id,
        "failed",
        expect=ALIVE,
        attempt=attempt,
        values={
            "error": error,
            "error_code": code,
            "finished_at": at or datetime.now(UTC),
            "lease_lost_at": None,
        },
        worker=worker,
        detail=error,
    )
