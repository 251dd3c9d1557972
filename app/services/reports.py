"""Applying workers' state reports to Postgres, in batches.

Reports arrive at least once and in any order. A batch locks its items (in id order),
works out each item's transitions from the locked rows, then writes them with
conditional updates on (id, status, attempt): a report for an attempt the item is no
longer on, or for a status it already left, changes nothing. Counts and job status
move in the same transaction, so they always equal a GROUP BY over the job's items.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import DBAPIError

from app.config import settings
from app.contract.wire import (
    CancelledReport,
    FailedReport,
    Report,
    RunningReport,
    SucceededReport,
    parse_report,
)
from app.coordination import REPORTS_CONSUMER
from app.db import db
from app.models import Event, Item, utcnow
from app.proofs import proof_valid
from app.services import scheduler, webhooks
from app.services.items import log_event, settle_job
from app.storage_factory import manifest_key, output_prefix

log = logging.getLogger(__name__)

ALIVE = ("pending", "queued", "running")
CHUNK = 500


class Conflict(Exception):
    """A row changed between reading and writing it (SQLite has no row locks): apply again."""


def _ts(value: Any) -> datetime | None:
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return None


def authentic(reports: list[Report]) -> list[Report]:
    """The reports that carry their item's proof; the others are logged and change nothing."""
    kept = []
    for report in reports:
        if proof_valid(report.signed_fields()):
            kept.append(report)
        else:
            what = {
                "item_id": report.item_id,
                "attempt": report.attempt,
                "state": report.state,
                "worker": report.worker,
            }
            log.warning("dropping a report without a valid proof for its item: %r", what)
    return kept


def outputs_inside(report: SucceededReport, job_id: str) -> bool:
    """Whether every output a success names lies under its own attempt's prefix."""
    prefix = output_prefix(job_id, report.item_id, report.attempt)
    return all(o.key.startswith(prefix) and ".." not in o.key.split("/") for o in report.outputs)


@dataclass
class ItemRow:
    """An item as a batch sees it: the locked row, then each transition applied in order."""

    id: str
    job_id: str
    queue: str
    status: str
    attempt: int
    max_attempts: int
    orig_status: str = ""
    orig_attempt: int = 0
    values: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.orig_status, self.orig_attempt = self.status, self.attempt


@dataclass
class Applied:
    """What one report did: the status the item left (None: stale, nothing changed)."""

    old: str | None
    new: str | None = None
    # The item's queue, whose window this change frees a place in (or adds a retry to).
    queue: str | None = None

    @property
    def needs_dispatch(self) -> bool:
        # A retryable failure put the item back to pending with attempt + 1: publish it.
        return self.old is not None and self.new == "pending"


def transition(item: ItemRow, report: Report, now: datetime) -> tuple[str, dict, dict] | None:
    """(new status, column values, event fields) for one report, or None when it is stale.

    Reports arrive at least once and in any order: one for another attempt than the item's, or for
    a status the item already left, changes nothing. `running` moves a queued (or still pending)
    item; an outcome ends any item still alive, and a retryable failure with attempts left puts
    it back to pending on the next attempt.
    """
    attempt = report.attempt
    worker = report.worker
    at = _ts(report.at)
    if attempt != item.attempt:
        return None
    if isinstance(report, RunningReport):
        if item.status not in ("queued", "pending"):
            return None
        values = {
            "worker": worker,
            "device": report.device,
            "started_at": at or now,
            "progress": 0.0,
            "lease_lost_at": None,
        }
        return "running", values, {"worker": worker, "detail": report.device}
    if item.status not in ALIVE:
        return None
    if isinstance(report, SucceededReport):
        if not outputs_inside(report, item.job_id):
            log.warning(
                "ignoring a success of item %s attempt %d naming outputs outside its prefix: %r",
                item.id,
                attempt,
                [o.key for o in report.outputs],
            )
            return None
        values = {
            "outputs": [o.wire() for o in report.outputs],
            "manifest_key": manifest_key(item.job_id, item.id, attempt),
            "meta": report.meta,
            "worker": worker,
            "progress": 1.0,
            "error": None,
            "error_code": None,
            "remote_id": report.remote_id,
            "cost_usd": _number(report.meta.get("cost_usd")),
            "duration_ms": report.duration_ms,
            "finished_at": at or now,
            "lease_lost_at": None,
        }
        if item.status != "running" and report.started_at is not None:
            values["started_at"] = _ts(report.started_at)
        return "succeeded", values, {"worker": worker, "detail": report.detail}
    if isinstance(report, CancelledReport):
        values = {"finished_at": at or now}
        return "cancelled", values, {"worker": worker, "detail": report.detail or "stopped by cancel"}
    if isinstance(report, FailedReport):
        error = (report.error or "unknown error")[:4000]
        code = report.error_code
        if report.retryable and attempt < item.max_attempts:
            values = {
                "attempt": attempt + 1,
                "error": error,
                "error_code": code,
                "progress": 0.0,
                "lease_lost_at": None,
            }
            event = {
                "kind": "item.retry",
                "worker": worker,
                "detail": f"attempt {attempt} failed: {error}",
                "attempt": attempt + 1,
            }
            return "pending", values, event
        if report.retryable:
            error = f"{error} (gave up after {attempt} attempts)"
        values = {"error": error, "error_code": code, "finished_at": at or now, "lease_lost_at": None}
        return "failed", values, {"worker": worker, "detail": error}
    raise TypeError(f"not a report: {report!r}")


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _lock_items(ids: list[str]) -> dict[str, ItemRow]:
    found: dict[str, ItemRow] = {}
    for start in range(0, len(ids), CHUNK):
        query = (
            select(Item.id, Item.job_id, Item.queue, Item.status, Item.attempt, Item.max_attempts)
            .where(Item.id.in_(ids[start : start + CHUNK]))
            .order_by(Item.id)
            .with_for_update()
        )
        for row in db.session.execute(query):
            found[row.id] = ItemRow(row.id, row.job_id, row.queue, row.status, row.attempt, row.max_attempts)
    return found


def _apply(reports: list[Report]) -> list[Applied]:
    now = utcnow()
    results = [Applied(None) for _ in reports]
    items = _lock_items(sorted({r.item_id for r in reports}))
    events: list[dict[str, Any]] = []
    for i, report in enumerate(reports):
        item = items.get(report.item_id)
        if item is None or item.job_id != report.job_id:
            continue
        change = transition(item, report, now)
        if change is None:
            continue
        to, values, event = change
        results[i] = Applied(item.status, to, item.queue)
        events.append(
            {
                "job_id": item.job_id,
                "item_id": item.id,
                "kind": event.get("kind") or f"item.{to}",
                "from_status": item.status,
                "to_status": to,
                "attempt": event.get("attempt", item.attempt),
                "worker": event.get("worker"),
                "detail": event.get("detail"),
                "at": now,
            }
        )
        item.values.update(values)
        item.status = to
        item.attempt = values.get("attempt", item.attempt)

    changed = [it for it in items.values() if it.values]
    # One executemany per shape of update; every row keeps its (status, attempt) fence.
    by_shape: dict[tuple[str, ...], list[ItemRow]] = defaultdict(list)
    for it in changed:
        by_shape[tuple(sorted(it.values))].append(it)
    for shape, group in by_shape.items():
        # The Core table, not the ORM entity: a list of parameter sets is then a plain executemany.
        table = Item.__table__
        stmt = (
            update(table)
            .where(
                table.c.id == bindparam("b_id"),
                table.c.status == bindparam("b_status"),
                table.c.attempt == bindparam("b_attempt"),
            )
            .values(
                status=bindparam("v_status"),
                updated_at=bindparam("v_updated_at"),
                **{col: bindparam(f"v_{col}") for col in shape},
            )
        )
        params = [
            {
                "b_id": it.id,
                "b_status": it.orig_status,
                "b_attempt": it.orig_attempt,
                "v_status": it.status,
                "v_updated_at": now,
                **{f"v_{col}": it.values[col] for col in shape},
            }
            for it in group
        ]
        result = db.session.execute(stmt, params)
        if result.rowcount not in (-1, len(params)):
            raise Conflict(f"{len(params) - result.rowcount} of {len(params)} items changed meanwhile")
    if events:
        db.session.execute(insert(Event), events)
        # Webhook deliveries for these changes commit (or roll back) with them.
        webhooks.record((e["job_id"], e["kind"], e["item_id"], e["to_status"]) for e in events)
        for e in events:
            log_event(
                **{k: e[k] for k in ("job_id", "kind", "item_id", "from_status", "to_status")},
                attempt=e["attempt"],
                worker=e["worker"],
                detail=e["detail"],
            )
    deltas: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for it in changed:
        if it.status != it.orig_status:
            deltas[it.job_id][it.orig_status] -= 1
            deltas[it.job_id][it.status] += 1
    for job_id in sorted({it.job_id for it in changed}):
        settle_job(job_id, deltas[job_id])
    return results


def _retriable(exc: DBAPIError) -> bool:
    """A deadlock or serialization failure (Postgres), a busy database file (SQLite)."""
    code = getattr(exc.orig, "pgcode", None)
    return code in ("40P01", "40001") or "database is locked" in str(exc.orig)


def apply_reports(reports: list[Report]) -> list[Applied]:
    """Apply reports in one transaction and commit; one Applied per report, in order.

    A database outage propagates (the caller keeps the reports and tries again later)."""
    for attempt in range(8):
        try:
            results = _apply(reports)
            db.session.commit()
            return results
        except Conflict as exc:
            db.session.rollback()
            log.info("report batch conflicted (%s); applying it again", exc)
        except DBAPIError as exc:
            db.session.rollback()
            if not _retriable(exc) or attempt == 7:
                raise
            log.info("report batch hit %s; applying it again", type(exc.orig).__name__)
            time.sleep(0.05 * (attempt + 1))
    raise Conflict("report batch kept conflicting")


def apply_report(report: Report) -> str | None:
    """One report (the reconciler's recoveries). Returns the status the item left, or None."""
    return apply_reports([report])[0].old


def queues_touched(results: Iterable[Applied]) -> set[str]:
    """The queues whose windows these changes free a place in, or add a retry to."""
    return {r.queue for r in results if r.old is not None and r.queue is not None}


# --- the appliers: one per partition, reading the workers' report stream in batches -------------
#
# The stream is read by one consumer group; each partition is a consumer of it, run by one applier
# at a time (a Redis lock per partition). Redis hands every report to exactly one consumer, and
# every transition is fenced, so partitions need nothing from each other: with APPLIER_PARTITIONS
# = N, N control processes apply side by side.

APPLIER_LOCK = "report-applier"
# A partition's reports read and not acked for this long are taken over by another partition
# (its applier died and nobody runs that partition any more).
STALE_REPORT_MS = 60_000
BATCH = 500
# Once a report arrives, wait this long for more: a transaction per handful of reports rather than
# per report (reports then wait at most this much longer).
LINGER_S = 0.1


def drain_reports(holder: str, budget_s: float = 5.0, block_ms: int = 250) -> int | None:
    """Apply reports from the stream for up to `budget_s`; None if another applier holds the lock
    or Redis cannot be reached to take it.

    Reports are acked only after their batch committed; a batch that hit a database outage
    stays unacked and is read again. A single report that cannot be applied at all is logged
    and dropped after being tried on its own: the reconciler recovers its item from the
    manifest or the lease.
    """
    from app.broker import coordination

    coord = coordination()
    # Renewed after each batch; a standby takes the partition this long after its holder was killed.
    lock_ttl = budget_s + 3
    lock = None
    try:
        for partition in range(settings().applier_partitions):
            name = APPLIER_LOCK if partition == 0 else f"{APPLIER_LOCK}:{partition}"
            lock = coord.try_lock(name, holder, lock_ttl)
            if lock is not None:
                break
    except redis.RedisError as exc:
        # The applier loop (tasks/control_loops.py) asks again a second later, until Redis is back.
        log.warning("cannot take an applier lock: %s", exc)
        return None
    if lock is None:
        return None
    consumer = REPORTS_CONSUMER if partition == 0 else f"{REPORTS_CONSUMER}-{partition}"
    applied = 0
    deadline = time.monotonic() + budget_s
    pending = True  # first what an earlier applier read and never acked
    try:
        while time.monotonic() < deadline:
            try:
                if pending:
                    entries = coord.read_reports(BATCH, None, pending=True, consumer=consumer)
                    if not entries:
                        entries = coord.claim_stale_reports(consumer, STALE_REPORT_MS, BATCH)
                else:
                    entries = coord.read_reports(BATCH, block_ms, consumer=consumer)
            except redis.RedisError as exc:
                log.warning("cannot read reports from Redis: %s", exc)
                time.sleep(1.0)
                continue
            if not entries:
                pending = False
                continue
            if not pending and len(entries) < BATCH:
                time.sleep(LINGER_S)
                try:
                    entries += coord.read_reports(BATCH - len(entries), None, consumer=consumer)
                except redis.RedisError as exc:
                    log.warning("cannot read reports from Redis: %s", exc)
            ids = [entry_id for entry_id, _ in entries]
            # A report that does not parse is logged and acked with the batch: it changes nothing.
            parsed = [parse_report(raw) for _, raw in entries]
            reports = authentic([r for r in parsed if r is not None])
            results = _apply_batch(reports)
            if results is None:
                pending = True  # read the same reports again once the database is back
                time.sleep(1.0)
                coord.renew_lock(lock, lock_ttl)
                continue
            try:
                coord.ack_reports(ids)
                coord.renew_lock(lock, lock_ttl)
            except redis.RedisError as exc:
                # Unacked reports are read again later; applying them twice changes nothing.
                log.warning("cannot ack reports: %s", exc)
            applied += len(ids)
            touched = queues_touched(results)
            if touched:
                # A worker that finished gets its next item now, not at the next tick.
                scheduler.fill_all(touched)
    finally:
        try:
            coord.release_lock(lock)
        except Exception as exc:  # noqa: BLE001 - it expires by itself
            log.warning("could not release the applier lock: %s", exc)
    return applied


def _database_down(exc: Exception) -> bool:
    if not isinstance(exc, DBAPIError):
        return False
    return exc.connection_invalidated or type(exc).__name__ in ("OperationalError", "InterfaceError")


def _apply_batch(reports: list[Report]) -> list[Applied] | None:
    """Apply a batch; None when the database is unavailable. A batch that fails otherwise is
    applied report by report, so one bad report cannot hold up the others."""
    try:
        return apply_reports(reports)
    except Exception as exc:  # noqa: BLE001 - sorted out below
        db.session.rollback()
        if _database_down(exc):
            log.warning("database unavailable, %d reports wait: %s", len(reports), exc)
            return None
        log.error("report batch failed (%s); applying its reports one by one", exc)
    results = []
    for report in reports:
        try:
            results.extend(apply_reports([report]))
        except Exception as exc:  # noqa: BLE001 - see above
            db.session.rollback()
            if _database_down(exc):
                return None
            log.error("dropping a report that cannot be applied (%s): %r", exc, report)
            results.append(Applied(None))
    return results
