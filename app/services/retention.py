"""Retention: remove what nobody needs any more, never what an unfinished job still needs.

Four sweeps, run by the control worker (`control.retention`, every RETENTION_INTERVAL_S):

- **outputs** (OUTPUT_RETENTION_DAYS, 0 = keep forever): jobs that finished longer ago lose
  `outputs/{job_id}/` (and the previews under `thumbs/outputs/{job_id}/`); their items keep their
  status, meta and timings, their output list becomes empty and the job records `outputs_expired_at`
  plus a `job.outputs_expired` event. Only finished jobs qualify; the job row is locked while its
  objects are removed, so a concurrent retry waits and then writes a fresh attempt.
- **inputs** (INPUT_RETENTION_DAYS, 0 = keep forever): uploads older than that which no unfinished
  job references and no job created within the period used are removed with their previews.
- **orphan attempts** (always, ORPHAN_GRACE_S after the job finished): directories
  `outputs/{job}/{item}/{attempt}/` of attempts other than the item's recorded successful one
  (failed, lost or cancelled attempts). Only attempts up to the item's attempt as read are touched,
  so an attempt started by a concurrent retry is never removed.
- **stale direct uploads** (always): staging objects `uploads/...` that were PUT through a presigned
  URL but never completed, a day after they were written (app/services/uploads.py).

Every step is a conditional update, so a second sweep running at the same time does no harm.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, exists, or_, select, union, update

from app.config import settings
from app.db import db
from app.models import FINISHED, UNFINISHED, Asset, Item, Job
from app.services.items import add_event
from app.services.uploads import STALE_UPLOAD_S, sweep_stale_uploads
from app.storage import Storage
from app.storage_factory import get_storage

log = logging.getLogger(__name__)

# Previews are kept at thumbs/{key}.jpg (web/views/images.py makes them on first view).
THUMB_PREFIX = "thumbs/"
BATCH = 200
UNFINISHED_JOB = ("queued", "running", "paused")
# One sweep stops starting new work after this long; the next one carries on.
TIME_BUDGET_S = 300.0


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def sweep(now: datetime | None = None) -> dict[str, int]:
    """Run every enabled sweep once; returns what was removed."""
    s = settings()
    now = now or datetime.now(UTC)
    started = time.monotonic()
    stats = {
        "jobs_expired": 0,
        "output_objects_removed": 0,
        "inputs_removed": 0,
        "jobs_swept": 0,
        "orphan_objects_removed": 0,
    }
    store = get_storage()
    if s.output_retention_days > 0:
        expire_outputs(store, now - timedelta(days=s.output_retention_days), stats, started)
    if s.input_retention_days > 0:
        expire_inputs(store, now - timedelta(days=s.input_retention_days), stats, started)
    sweep_orphans(store, now - timedelta(seconds=s.orphan_grace_s), stats, started)
    # Direct uploads nobody completed (app/services/uploads.py): a closed tab, a failed client.
    stats["stale_uploads_removed"] = sweep_stale_uploads(store, now - timedelta(seconds=STALE_UPLOAD_S))
    if any(stats.values()):
        log.info("retention: %s", stats)
    return stats


def _out_of_time(started: float) -> bool:
    return time.monotonic() - started > TIME_BUDGET_S


# --- outputs of old jobs ---------------------------------------------------------------------------


def _expiry_due() -> Any:
    return or_(Job.outputs_expired_at.is_(None), Job.outputs_expired_at < Job.finished_at)


def expire_outputs(store: Storage, cutoff: datetime, stats: dict[str, int], started: float) -> None:
    days = settings().output_retention_days
    while not _out_of_time(started):
        ids = list(
            db.session.scalars(
                select(Job.id)
                .where(Job.status.in_(FINISHED), Job.finished_at < cutoff, _expiry_due())
                .order_by(Job.finished_at)
                .limit(BATCH)
            )
        )
        db.session.commit()
        if not ids:
            return
        for job_id in ids:
            if _expire_job(store, job_id, cutoff, days, stats) is None:
                # Skipped (changed meanwhile): leave it for the next sweep rather than loop on it.
                continue
            if _out_of_time(started):
                return
        if len(ids) < BATCH:
            return


def _expire_job(
    store: Storage, job_id: str, cutoff: datetime, days: float, stats: dict[str, int]
) -> int | None:
    job = db.session.execute(
        select(Job)
        .where(Job.id == job_id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    finished_at = _aware(job.finished_at) if job is not None else None
    expired_at = _aware(job.outputs_expired_at) if job is not None else None
    if (
        job is None
        or job.status not in FINISHED
        or finished_at is None
        or finished_at >= cutoff
        or (expired_at is not None and expired_at >= finished_at)
    ):
        db.session.rollback()
        return None
    try:
        removed = store.delete_prefix(f"outputs/{job_id}/")
        removed += store.delete_prefix(f"{THUMB_PREFIX}outputs/{job_id}/")
    except Exception as exc:  # noqa: BLE001 - storage away: nothing recorded, the next sweep retries
        db.session.rollback()
        log.warning("retention: could not remove the outputs of job %s: %s", job_id, exc)
        return None
    now = datetime.now(UTC)
    db.session.execute(
        update(Item).where(Item.job_id == job_id).values(outputs=[], manifest_key=None),
        execution_options={"synchronize_session": False},
    )
    db.session.execute(
        update(Job).where(Job.id == job_id).values(outputs_expired_at=now, orphans_swept_at=now)
    )
    add_event(
        job_id,
        "job.outputs_expired",
        detail=f"{removed} output objects removed: finished more than {days:g} days ago",
    )
    db.session.commit()
    stats["jobs_expired"] += 1
    stats["output_objects_removed"] += removed
    return removed


# --- old inputs ------------------------------------------------------------------------------------


def _inputs_in_use(cutoff: datetime) -> Any:
    """Input keys of unfinished jobs (any of their items: a finished one may still be retried) and of
    jobs created within the retention period."""
    keys = select(Item.input_key).join(Job, Job.id == Item.job_id)
    unfinished = keys.where(Job.status.in_(UNFINISHED_JOB))
    recent = keys.where(Job.created_at >= cutoff)
    return union(unfinished, recent).subquery()


def expire_inputs(store: Storage, cutoff: datetime, stats: dict[str, int], started: float) -> None:
    failed: set[str] = set()
    while not _out_of_time(started):
        in_use = _inputs_in_use(cutoff)
        query = select(Asset.key).where(Asset.created_at < cutoff, Asset.key.not_in(select(in_use.c[0])))
        if failed:
            query = query.where(Asset.key.not_in(failed))
        keys = list(db.session.scalars(query.order_by(Asset.created_at).limit(BATCH * 5)))
        db.session.commit()
        if not keys:
            return
        for key in keys:
            if not _expire_input(store, key, cutoff):
                failed.add(key)
            else:
                stats["inputs_removed"] += 1
        if len(keys) < BATCH * 5:
            return


def _expire_input(store: Storage, key: str, cutoff: datetime) -> bool:
    # The row goes first, in one statement that re-checks that nothing unfinished took the input
    # up meanwhile; the bytes follow.
    used = exists().where(
        Item.input_key == key,
        Item.job_id == Job.id,
        or_(Job.status.in_(UNFINISHED_JOB), Job.created_at >= cutoff, Item.status.in_(UNFINISHED)),
    )
    result = db.session.execute(
        delete(Asset).where(Asset.key == key, Asset.created_at < cutoff, ~used),
        execution_options={"synchronize_session": False},
    )
    db.session.commit()
    if result.rowcount != 1:
        return False
    try:
        store.delete(key)
        store.delete(f"{THUMB_PREFIX}{key}.jpg")
    except Exception as exc:  # noqa: BLE001 - the bytes stay; nothing references them any more
        log.warning("retention: could not remove input %s: %s", key, exc)
    return True


# --- attempt directories nobody points at --------------------------------------------------------------


def sweep_orphans(store: Storage, finished_before: datetime, stats: dict[str, int], started: float) -> None:
    due = or_(Job.orphans_swept_at.is_(None), Job.orphans_swept_at < Job.finished_at)
    skipped: set[str] = set()
    while not _out_of_time(started):
        query = select(Job.id).where(Job.status.in_(FINISHED), Job.finished_at <= finished_before, due)
        if skipped:
            query = query.where(Job.id.not_in(skipped))
        ids = list(db.session.scalars(query.order_by(Job.finished_at).limit(BATCH)))
        db.session.commit()
        if not ids:
            return
        for job_id in ids:
            removed = _sweep_job(store, job_id, finished_before)
            if removed is None:
                skipped.add(job_id)
                continue
            stats["jobs_swept"] += 1
            stats["orphan_objects_removed"] += removed
            if _out_of_time(started):
                return
        if len(ids) < BATCH:
            return


def _sweep_job(store: Storage, job_id: str, finished_before: datetime) -> int | None:
    # Only items that can have another attempt's directory: retried ones and those that did not succeed.
    rows = list(
        db.session.execute(
            select(Item.id, Item.status, Item.attempt).where(
                Item.job_id == job_id, or_(Item.attempt > 1, Item.status != "succeeded")
            )
        )
    )
    db.session.commit()
    removed = 0
    try:
        for item_id, status, attempt in rows:
            keep = attempt if status == "succeeded" else None
            removed += _remove_other_attempts(store, job_id, item_id, keep, attempt)
    except Exception as exc:  # noqa: BLE001 - storage away: try again next sweep
        log.warning("retention: could not sweep attempts of job %s: %s", job_id, exc)
        return None
    now = datetime.now(UTC)
    # Recorded only if the job is still finished as it was: a retry in between makes it due again.
    db.session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.status.in_(FINISHED),
            and_(Job.finished_at.is_not(None), Job.finished_at <= finished_before),
        )
        .values(orphans_swept_at=now)
    )
    db.session.commit()
    return removed


def _remove_other_attempts(store: Storage, job_id: str, item_id: str, keep: int | None, up_to: int) -> int:
    prefix = f"outputs/{job_id}/{item_id}/"
    doomed: list[str] = []
    cursor = None
    while True:
        objects, cursor = store.list(prefix=prefix, cursor=cursor, limit=1000)
        for obj in objects:
            segment = obj.key[len(prefix) :].split("/", 1)[0]
            if not segment.isdigit():
                continue  # not an attempt directory: not ours to judge
            attempt = int(segment)
            if attempt != keep and attempt <= up_to:
                doomed.append(obj.key)
        if cursor is None:
            break
    for key in doomed:
        store.delete(key)
    return len(doomed)
