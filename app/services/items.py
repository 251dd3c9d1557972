"""Fenced item transitions and the job roll-up.

Every change of an item's status is a conditional UPDATE on (id, status, attempt):
a duplicate or stale report matches no row and changes nothing. The job's counts
move in the same transaction, so they always equal a GROUP BY over its items.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from app.db import db
from app.models import FINISHED, ITEM_STATUSES, Event, Item, Job, status_counts, utcnow
from app.services import notify, webhooks

log = logging.getLogger("bulkgen.state")


def add_event(
    job_id: str,
    kind: str,
    *,
    item_id: str | None = None,
    from_status: str | None = None,
    to_status: str | None = None,
    attempt: int | None = None,
    worker: str | None = None,
    detail: str | None = None,
) -> None:
    db.session.add(
        Event(
            job_id=job_id,
            item_id=item_id,
            kind=kind,
            from_status=from_status,
            to_status=to_status,
            attempt=attempt,
            worker=worker,
            detail=detail,
        )
    )
    log_event(job_id, kind, item_id, from_status, to_status, attempt=attempt, worker=worker, detail=detail)
    webhooks.record([(job_id, kind, item_id, to_status)])


def log_event(
    job_id: str,
    kind: str,
    item_id: str | None,
    from_status: str | None,
    to_status: str | None,
    *,
    attempt: int | None,
    worker: str | None,
    detail: str | None,
) -> None:
    """One log line per state change, with job and item ids."""
    log.info(
        "%s job=%s item=%s %s->%s attempt=%s worker=%s %s",
        kind,
        job_id,
        item_id or "-",
        from_status or "-",
        to_status or "-",
        attempt,
        worker or "-",
        detail or "",
        extra={
            "job_id": job_id,
            "item_id": item_id,
            "kind": kind,
            "from_status": from_status,
            "to_status": to_status,
            "attempt": attempt,
            "worker": worker,
        },
    )


def move_item(
    item_id: str,
    job_id: str,
    to: str,
    *,
    expect: Iterable[str],
    attempt: int | None,
    values: dict[str, Any] | None = None,
    kind: str | None = None,
    worker: str | None = None,
    detail: str | None = None,
    event_attempt: int | None = None,
) -> str | None:
    """Move one item to `to` if its status is one of `expect` (and its attempt matches).

    Returns the status it had, or None when nothing matched (a duplicate or stale report).
    """
    now = utcnow()
    expect = tuple(expect)
    for _ in range(3):
        # Lock the row (Postgres) and read what it is now: a concurrent pending -> queued that has
        # not committed yet is waited for, not missed.
        row = db.session.execute(
            select(Item.status, Item.attempt).where(Item.id == item_id).with_for_update()
        ).first()
        if row is None or row.status not in expect or (attempt is not None and row.attempt != attempt):
            return None
        old = row.status
        result = db.session.execute(
            update(Item)
            .where(Item.id == item_id, Item.status == old, Item.attempt == row.attempt)
            .values(status=to, updated_at=now, **(values or {})),
            execution_options={"synchronize_session": False},
        )
        if result.rowcount != 1:
            continue  # SQLite has no row locks: another writer got in between; look again
        add_event(
            job_id,
            kind or f"item.{to}",
            item_id=item_id,
            from_status=old,
            to_status=to,
            attempt=event_attempt if event_attempt is not None else attempt,
            worker=worker,
            detail=detail,
        )
        settle_job(job_id, {old: -1, to: +1} if old != to else None)
        return old
    return None


def lock_items(*where: Any) -> list[str]:
    """Lock the matching items in id order (Postgres) and return their ids.

    Every writer that changes several items takes their row locks in id order first, and the job's
    row after its items, so two writers (the report applier, a dispatch, a cancel) never wait on
    each other in a cycle.
    """
    return list(db.session.scalars(select(Item.id).where(*where).order_by(Item.id).with_for_update()))


def move_job_items(
    job_id: str, to: str, expect: Iterable[str], values: dict[str, Any] | None = None
) -> tuple[list[str], dict[str, int]]:
    """Bulk variant for one job: returns the ids moved and the count changes, which the caller
    applies with settle_job. One UPDATE per old status keeps counts exact."""
    now = utcnow()
    expect = tuple(expect)
    moved: list[str] = []
    deltas: dict[str, int] = {}
    lock_items(Item.job_id == job_id, Item.status.in_(expect))
    for old in expect:
        ids = list(
            db.session.scalars(
                update(Item)
                .where(Item.job_id == job_id, Item.status == old)
                .values(status=to, updated_at=now, **(values or {}))
                .returning(Item.id),
                execution_options={"synchronize_session": False},
            )
        )
        if ids and old != to:
            deltas[old] = deltas.get(old, 0) - len(ids)
            deltas[to] = deltas.get(to, 0) + len(ids)
        moved.extend(ids)
    return moved, deltas


def mark_queued(job_id: str, published: list[tuple[str, int]]) -> int:
    """pending -> queued for items that reached the broker with the attempt that was published."""
    if not published:
        return 0
    now = utcnow()
    by_attempt: dict[int, list[str]] = {}
    for item_id, attempt in published:
        by_attempt.setdefault(attempt, []).append(item_id)
    count = 0
    for attempt, ids in by_attempt.items():
        ids.sort()
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            lock_items(Item.id.in_(chunk), Item.status == "pending", Item.attempt == attempt)
            result = db.session.execute(
                update(Item)
                .where(Item.id.in_(chunk), Item.status == "pending", Item.attempt == attempt)
                .values(status="queued", queued_at=now, updated_at=now),
                execution_options={"synchronize_session": False},
            )
            count += result.rowcount
    settle_job(job_id, {"pending": -count, "queued": count})
    return count


def derive_status(job: Any) -> str:
    """A job's status from its counts (a Job, or a row with its n_* columns, total, cancelled_at)."""
    c = status_counts(job)
    unfinished = c["pending"] + c["queued"] + c["running"]
    finished = sum(c[s] for s in FINISHED)
    if job.total and unfinished == 0:
        if job.cancelled_at is not None and c["cancelled"]:
            return "cancelled"
        if c["failed"]:
            return "failed"
        if c["cancelled"]:
            return "cancelled"
        return "succeeded"
    if getattr(job, "paused_at", None) is not None:
        return "paused"
    if c["running"] or finished:
        return "running"
    return "queued"


_JOB_STATE = (
    Job.status,
    Job.total,
    *(getattr(Job, f"n_{status}") for status in ITEM_STATUSES),
    Job.started_at,
    Job.finished_at,
    Job.cancelled_at,
    Job.paused_at,
)


def settle_job(job_id: str, deltas: dict[str, int] | None = None) -> None:
    """Move the job's counts by `deltas` (status -> change) and derive its status from them.

    One locked read-modify-write of the job row, taken after the caller's item rows (the lock
    order every writer keeps). FOR NO KEY UPDATE, as an UPDATE of non-key columns takes: it does
    not conflict with the key-share locks that inserting events takes."""
    notify.mark_job_changed(db.session, job_id)  # published after the commit (app/services/notify.py)
    moves = {f"n_{status}": getattr(Job, f"n_{status}") + d for status, d in (deltas or {}).items() if d}
    if moves:
        row = db.session.execute(
            update(Job).where(Job.id == job_id).values(**moves).returning(*_JOB_STATE),
            execution_options={"synchronize_session": False},
        ).one()
    else:
        row = db.session.execute(
            select(*_JOB_STATE).where(Job.id == job_id).with_for_update(key_share=True)
        ).one()
    status = derive_status(row)
    now = utcnow()
    values: dict[str, datetime | str | None] = {}
    if row.started_at is None and (row.n_running or status in FINISHED):
        values["started_at"] = now
    if status in FINISHED:
        if row.finished_at is None:
            values["finished_at"] = now
    elif row.finished_at is not None:
        values["finished_at"] = None
    if status != row.status:
        values["status"] = status
        add_event(job_id, "job.status", from_status=row.status, to_status=status)
    if values:
        db.session.execute(
            update(Job).where(Job.id == job_id).values(**values),
            execution_options={"synchronize_session": False},
        )
