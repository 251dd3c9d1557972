"""The periodic reconciler: rebuilds whatever Redis lost from Postgres and storage.

- after a lost lease put an item back, the windows are topped up at once (beat fills them
  every second anyway: app/services/scheduler.py);
- running items whose lease vanished and stayed gone are recovered from their
  manifest if the attempt finished, else re-dispatched with attempt + 1 (or failed
  after max attempts);
- if the broker's epoch marker vanished, Redis lost its data: queued items are
  published again (duplicates are harmless, the lease and fenced updates absorb them);
- running items past their deadline are treated like a lost worker;
- items a worker prefetched and then vanished with (its hold expired) are published again, on
  the same attempt: they never started;
- items taken back out of the window in Redis whose move back to pending did not commit are moved.

Work per tick grows with the windows and the running items, never with the pending backlog.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from app.broker import coordination, item_payload, publish_items
from app.config import settings
from app.contract.wire import FailedReport, Manifest, Report, SucceededReport, parse_report
from app.db import db
from app.models import PRIORITIES, Item, Job
from app.services import scheduler
from app.services.items import add_event, lock_items, settle_job
from app.services.reports import apply_report, apply_reports, authentic
from app.storage import NotFound
from app.storage_factory import get_storage, manifest_key

log = logging.getLogger(__name__)
BATCH = 2000


def read_manifest(item: Item) -> Manifest | None:
    key = manifest_key(item.job_id, item.id, item.attempt)
    try:
        raw = json.loads(get_storage().get_bytes(key))
    except NotFound:
        return None
    except Exception as exc:  # noqa: BLE001 - unreadable manifest: treat as absent, retry later
        log.warning("manifest %s unreadable: %s", key, exc)
        return None
    manifest = Manifest.parse(raw)
    if manifest is not None and (manifest.item_id, manifest.job_id, manifest.attempt) != (
        item.id,
        item.job_id,
        item.attempt,
    ):
        log.warning("manifest %s names another item or attempt; ignored", key)
        return None
    return manifest


def recover_from_manifest(item: Item) -> bool:
    manifest = read_manifest(item)
    if manifest is None:
        return False
    report = SucceededReport(
        state="succeeded",
        item_id=item.id,
        job_id=item.job_id,
        attempt=item.attempt,
        at=manifest.finished_at,
        outputs=manifest.outputs,
        meta=manifest.meta,
        worker=manifest.worker,
        duration_ms=manifest.duration_ms,
        detail="recovered from manifest",
    )
    return apply_report(report) is not None


def reconcile() -> dict[str, int]:
    s = settings()
    coord = coordination()
    now = datetime.now(UTC)
    stats = {
        "published": 0,
        "republished": 0,
        "recovered": 0,
        "redispatched": 0,
        "lease_missing": 0,
        "recalled": 0,
    }

    if coord.epoch() is None:
        coord.set_epoch(str(time.time()))
        stats["republished"] += republish_queued(reason="broker epoch marker missing: Redis lost its data")
    # A missing lease is an expired one -- except right after the reconciler could not reach Redis
    # (restarted, frozen, unreachable): then workers get two heartbeats to take theirs again.
    grace = timedelta(seconds=max(2 * s.heartbeat_s, 1.0))
    in_grace = coord.lease_grace(
        time.time(), gap_s=2 * s.reconcile_interval_s + 1.0, grace_s=grace.total_seconds()
    )

    running = list(db.session.scalars(select(Item).where(Item.status == "running").limit(BATCH)))
    present = coord.leases_present([i.id for i in running])
    deadline = timedelta(seconds=s.item_deadline_s + s.lease_ttl_s)
    # As read with the leases: each commit below reloads the rows, and the applier may meanwhile have
    # moved an item on (a failure reported just before its lease went): its lost report is then stale.
    seen_rows = [_Seen(i.id, i.job_id, i.attempt, i.worker) for i in running]
    for item, seen in zip(running, seen_rows, strict=True):
        if present.get(item.id):
            if item.lease_lost_at is not None:
                item.lease_lost_at = None
            overdue = item.started_at is not None and _aware(item.started_at) + deadline < now
            if not overdue:
                continue
            reason = f"ran past its deadline of {s.item_deadline_s} s"
        else:
            stats["lease_missing"] += 1
            if in_grace:
                if item.lease_lost_at is None:
                    item.lease_lost_at = now
                    continue
                if _aware(item.lease_lost_at) + grace > now:
                    continue
            reason = "worker lost: lease expired"
        db.session.commit()
        if recover_from_manifest(item):
            stats["recovered"] += 1
            continue
        outcome = _recorded_outcome(coord, item)
        if outcome is not None:
            # The worker failed and said so, and its report has not been applied yet (or was lost).
            stats["recovered"] += 1
            applied = apply_reports([outcome])[0]
        else:
            applied = apply_reports([_lost(seen, reason)])[0]
        if applied.needs_dispatch:
            stats["redispatched"] += 1
    db.session.commit()

    stats["recalled"] += _finish_recalls(coord)
    if stats["redispatched"] or stats["recalled"]:
        # The new attempts go ahead of fresh work now, not at the next beat's fill.
        stats["published"] += sum(f.published for f in scheduler.fill_all())

    expired = coord.take_expired_holds(time.time(), BATCH)
    if expired:
        stats["republished"] += republish_queued(
            reason="the worker that prefetched them went away before starting them", attempts=dict(expired)
        )

    stuck_cutoff = now - timedelta(seconds=s.visibility_timeout_s)
    stats["republished"] += republish_queued(
        reason="queued longer than the visibility timeout", older_than=stuck_cutoff
    )
    if any(stats.values()):
        log.info("reconcile: %s", stats)
    return stats


def republish_queued(
    reason: str,
    older_than: datetime | None = None,
    attempts: dict[str, int] | None = None,
) -> int:
    """Publish queued items again: all of them, those queued before `older_than`, or those of
    `attempts` that are still on the attempt given there."""
    query = select(Item, Job).join(Job, Job.id == Item.job_id).where(Item.status == "queued")
    if older_than is not None:
        query = query.where(Item.queued_at < older_than)
    if attempts is not None:
        query = query.where(Item.id.in_(list(attempts)))
    rows = list(db.session.execute(query.order_by(Item.queued_at).limit(BATCH * 5)))
    db.session.commit()
    if attempts is not None:
        rows = [(item, job) for item, job in rows if attempts.get(item.id) == item.attempt]
    messages = []
    for item, job in rows:
        if recover_from_manifest(item):
            continue
        # Seen before: the worker looks for an already committed manifest before running it. A new
        # dispatch token: an earlier message of this item, should it still exist, is refused.
        message = item_payload(item, job, dispatch=secrets.token_hex(8), redelivery=True)
        messages.append((message, item.queue, PRIORITIES.get(job.priority, 3)))
    published = publish_items(messages)
    if published:
        # Item rows first (in id order), then the events that reference the job: the lock order
        # every writer keeps.
        now = datetime.now(UTC)
        ordered = sorted(published)
        for start in range(0, len(ordered), 500):
            chunk = ordered[start : start + 500]
            lock_items(Item.id.in_(chunk), Item.status == "queued")
            db.session.execute(
                update(Item).where(Item.id.in_(chunk), Item.status == "queued").values(queued_at=now),
                execution_options={"synchronize_session": False},
            )
        by_job: dict[str, int] = {}
        for message, _, _ in messages:
            by_job[message.job_id] = by_job.get(message.job_id, 0) + 1
        for job_id, count in sorted(by_job.items()):
            add_event(job_id, "job.republished", detail=f"{count} queued items published again: {reason}")
        db.session.commit()
    return len(published)


def _finish_recalls(coord: Any) -> int:
    """queued -> pending for window items whose message was voided in Redis while the move in
    Postgres did not commit (the scheduler died between the two)."""
    queued = list(
        db.session.execute(select(Item.id, Item.job_id, Item.attempt).where(Item.status == "queued"))
    )
    db.session.commit()
    try:
        voided = coord.recalled([row.id for row in queued])
    except Exception as exc:  # noqa: BLE001 - Redis away: next tick
        log.warning("could not read dispatch tokens: %s", exc)
        return 0
    moved = 0
    for row in queued:
        if row.id not in voided:
            continue
        lock_items(Item.id == row.id, Item.status == "queued")
        if db.session.execute(
            update(Item)
            .where(Item.id == row.id, Item.status == "queued", Item.attempt == row.attempt)
            .values(status="pending", queued_at=None, updated_at=datetime.now(UTC)),
            execution_options={"synchronize_session": False},
        ).rowcount:
            add_event(row.job_id, "job.window", detail="1 queued item taken back out of the broker")
            settle_job(row.job_id, {"queued": -1, "pending": 1})
            moved += 1
        db.session.commit()
    return moved


@dataclass(frozen=True)
class _Seen:
    id: str
    job_id: str
    attempt: int
    worker: str | None


def _lost(item: _Seen, reason: str) -> FailedReport:
    return FailedReport(
        state="failed",
        item_id=item.id,
        job_id=item.job_id,
        attempt=item.attempt,
        error=reason,
        error_code="worker_lost",
        retryable=True,
        worker=item.worker,
    )


def _recorded_outcome(coord: Any, item: Item) -> Report | None:
    try:
        raw = coord.outcome(item.id, item.attempt)
    except Exception as exc:  # noqa: BLE001 - Redis away: decide on the lease alone
        log.warning("could not read the outcome of %s: %s", item.id, exc)
        return None
    outcome = parse_report(raw) if raw is not None else None
    if outcome is None or outcome.item_id != item.id:
        return None
    return outcome if authentic([outcome]) else None


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; they were written in UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)
