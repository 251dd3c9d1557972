"""Submitting, dispatching, cancelling and retrying jobs."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy import text as sa_text
from sqlalchemy.exc import IntegrityError

from app import storage as storage_mod
from app.broker import coordination
from app.config import settings
from app.db import db
from app.models import PRIORITIES, Asset, Item, Job, User, new_id, utcnow
from app.providers import registry
from app.services import policy, scheduler, webhooks
from app.services.items import add_event, move_item, move_job_items, settle_job
from app.storage_factory import get_storage
from providers import ParamError, get_provider

log = logging.getLogger(__name__)


@dataclass
class Submission:
    provider: str | None
    model: str | None
    inputs: Any
    prompt: str | None = None
    prompts: Any = None
    params: Any = None
    priority: str | None = None
    idempotency_key: str | None = None
    webhook: Any = None
    webhook_events: Any = None
    max_concurrency: Any = None

    def request_hash(self) -> str:
        """sha256 of the submission as canonical JSON, the idempotency key itself left out."""
        fields = asdict(self)
        fields.pop("idempotency_key")
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
        return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


class IdempotencyConflict(ParamError):
    """The idempotency key was used before with a different submission (answered 409, as Stripe does)."""

    def __init__(self, key: str) -> None:
        super().__init__(
            "idempotency_key",
            f"idempotency_key {key!r} was already used with a different request; "
            "send the same request to get that job, or use a new key for a new job",
        )
        self.key = key


def _same_request(existing: Job, request_hash: str | None) -> Job:
    """The job an idempotency key already made, if this is the same request again."""
    # Jobs made before request hashes were kept (NULL) count as the same request.
    if existing.request_hash is not None and existing.request_hash != request_hash:
        raise IdempotencyConflict(existing.idempotency_key or "")
    return existing


def check_max_concurrency(value: Any) -> int | None:
    """None (no cap) or a whole number of items in flight, at least 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1_000_000:
        raise ParamError(
            "max_concurrency", "max_concurrency must be a whole number from 1, or null for no cap"
        )
    return value


def check_priority(value: Any) -> str:
    if not isinstance(value, str) or value not in PRIORITIES:
        raise ParamError("priority", f"priority must be one of {list(PRIORITIES)}")
    return value


def _check_inputs(inputs: Any) -> list[str]:
    if inputs is None:
        raise ParamError("inputs", "inputs is required: a list of uploaded image keys")
    if not isinstance(inputs, list) or not all(isinstance(k, str) for k in inputs):
        raise ParamError("inputs", "inputs must be a list of storage keys (strings)")
    if not inputs:
        raise ParamError("inputs", "inputs is empty: give at least one image key")
    limit = settings().max_items_per_job
    if len(inputs) > limit:
        raise ParamError("inputs", f"at most {limit} inputs per job, got {len(inputs)}")
    for key in inputs:
        try:
            storage_mod.validate_key(key)
        except ValueError as exc:
            raise ParamError("inputs", f"invalid key {key!r}: {exc}") from None
    known = set()
    unique = list(dict.fromkeys(inputs))
    for start in range(0, len(unique), 500):
        chunk = unique[start : start + 500]
        known.update(db.session.scalars(select(Asset.key).where(Asset.key.in_(chunk))))
    store = get_storage()
    for key in unique:
        if key not in known and not store.exists(key):
            raise ParamError("inputs", f"input {key!r} does not exist in storage")
    return inputs


def create_job(sub: Submission, user_id: int | None) -> tuple[Job, bool]:
    """Validate and store a job with its items (pending), then publish. Returns (job, created)."""
    request_hash = None
    if sub.idempotency_key is not None:
        if not isinstance(sub.idempotency_key, str) or not 0 < len(sub.idempotency_key) <= 200:
            raise ParamError("idempotency_key", "idempotency_key must be a string of 1 to 200 characters")
        request_hash = sub.request_hash()
        existing = db.session.scalar(
            select(Job).where(Job.created_by == user_id, Job.idempotency_key == sub.idempotency_key)
        )
        if existing is not None:
            return _same_request(existing, request_hash), False
    provider = get_provider(registry(), sub.provider)
    if sub.prompt is not None and not isinstance(sub.prompt, str):
        raise ParamError("prompt", "prompt must be a string")
    if sub.prompts is not None and (
        not isinstance(sub.prompts, list) or not all(isinstance(p, str) for p in sub.prompts)
    ):
        raise ParamError("prompts", "prompts must be a list of strings")
    if sub.params is not None and not isinstance(sub.params, dict):
        raise ParamError("params", "params must be an object")
    priority = check_priority("normal" if sub.priority is None else sub.priority)
    max_concurrency = check_max_concurrency(sub.max_concurrency)
    if sub.model is not None and not isinstance(sub.model, str):
        raise ParamError("model", "model must be a string")
    spec = provider.validate(sub.model, sub.prompt, sub.prompts, sub.params or {})
    webhook, webhook_events = webhooks.parse_subscription(sub.webhook, sub.webhook_events)
    if webhook and user_id is not None and (user := db.session.get(User, user_id)) is not None:
        # Made now, in the web request, so the sender never has to make one (two control processes
        # could each make a different one).
        webhooks.secret_of(user)
    inputs = _check_inputs(sub.inputs)
    routed_from, fallback_reason = None, None
    if provider.name == "wan_local" and (fallback_reason := policy.wan_fallback_reason()):
        # The admin's WAN parameters do not apply to Runway: its model defaults do. A job Runway
        # cannot take (e.g. a prompt over its limit) stays on WAN and waits there.
        runway = get_provider(registry(), "runway")
        try:
            spec, provider, routed_from = (
                runway.validate(settings().wan_fallback_model, sub.prompt, None, {}),
                runway,
                provider.name,
            )
        except ParamError:
            fallback_reason = None

    job = Job(
        id=new_id(),
        provider=provider.name,
        model=spec.model,
        prompt=spec.prompt,
        prompts=spec.prompts,
        params=spec.params,
        priority=priority,
        status="queued",
        total=len(inputs),
        n_pending=len(inputs),
        created_by=user_id,
        idempotency_key=sub.idempotency_key,
        request_hash=request_hash,
        routed_from=routed_from,
        webhook=webhook,
        webhook_events=webhook_events,
        max_concurrency=max_concurrency,
    )
    db.session.add(job)
    now = utcnow()
    item_ids = [new_id() for _ in inputs]
    queues = [provider.queue_for(spec, i) for i in range(len(inputs))]
    try:
        db.session.flush()
        insert_items(job.id, provider.name, item_ids, inputs, queues, now)
        add_event(
            job.id, "job.created", detail=f"{len(inputs)} items, provider {provider.name}, model {spec.model}"
        )
        if routed_from:
            detail = f"sent to Runway {spec.model} instead of {routed_from}: {fallback_reason}"
            add_event(job.id, "job.fallback", detail=detail)
        db.session.commit()
    except IntegrityError:
        # Two requests raced on one idempotency key: the first one wins.
        db.session.rollback()
        existing = db.session.scalar(
            select(Job).where(Job.created_by == user_id, Job.idempotency_key == sub.idempotency_key)
        )
        if existing is None:
            raise
        return _same_request(existing, request_hash), False

    # The first items enter their queue's window now; the rest follow as workers free up.
    filled = scheduler.fill_all(set(queues))
    job.broker_unreachable = any(not f.broker_reachable for f in filled)  # type: ignore[attr-defined]
    return job, True


# One statement for all of a job's items on Postgres: arrays in, rows out (a 10,000-item job in
# a fraction of the time an executemany of row dicts takes).
_INSERT_ITEMS_PG = sa_text(
    """
    INSERT INTO items (id, job_id, idx, input_key, provider, queue, status, attempt, max_attempts,
                       progress, created_at, updated_at)
    SELECT t.id, :job_id, t.idx - 1, t.input_key, :provider, t.queue, 'pending', 1, :max_attempts,
           0.0, :now, :now
    FROM unnest(CAST(:ids AS varchar[]), CAST(:keys AS varchar[]), CAST(:queues AS varchar[]))
         WITH ORDINALITY AS t(id, input_key, queue, idx)
    """
)


def insert_items(
    job_id: str, provider: str, ids: list[str], keys: list[str], queues: list[str], now: datetime
) -> None:
    max_attempts = settings().max_attempts
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(
            _INSERT_ITEMS_PG,
            {
                "job_id": job_id,
                "provider": provider,
                "max_attempts": max_attempts,
                "now": now,
                "ids": ids,
                "keys": keys,
                "queues": queues,
            },
        )
        return
    rows = [
        {
            "id": item_id,
            "job_id": job_id,
            "idx": i,
            "input_key": key,
            "provider": provider,
            "queue": queue,
            "status": "pending",
            "attempt": 1,
            "max_attempts": max_attempts,
            "progress": 0.0,
            "created_at": now,
            "updated_at": now,
        }
        for i, (item_id, key, queue) in enumerate(zip(ids, keys, queues, strict=True))
    ]
    db.session.execute(insert(Item), rows)


def cancel_job(job: Job) -> int:
    """Cancel every unfinished item; running ones stop at their next cancel check. Commits."""
    now = utcnow()
    # Items first, then the job row: the lock order every writer keeps. Only items that reached the
    # broker need a cancel flag in Redis; pending ones were never published (no fill publishes
    # meanwhile: the windows are held until the commit).
    scheduler.hold_windows()
    published, deltas = move_job_items(job.id, "cancelled", ("queued", "running"), {"finished_at": now})
    waiting, more = move_job_items(job.id, "cancelled", ("pending",), {"finished_at": now})
    for status, change in more.items():
        deltas[status] = deltas.get(status, 0) + change
    moved = published + waiting
    db.session.execute(
        update(Job).where(Job.id == job.id, Job.cancelled_at.is_(None)).values(cancelled_at=now),
        execution_options={"synchronize_session": False},
    )
    add_event(job.id, "job.cancel", detail=f"cancel requested: {len(moved)} unfinished items cancelled")
    settle_job(job.id, deltas)
    db.session.commit()
    try:
        coordination().cancel(published)
    except Exception as exc:  # noqa: BLE001 - stale results are fenced out by the control side
        log.warning("could not set cancel flags for job %s: %s", job.id, exc)
    scheduler.fill_all()  # the cancelled items' places in the windows go to other work
    return len(moved)


def retry_item(item: Item, reason: str = "retry requested", fill: bool = True) -> bool:
    """failed (or cancelled) -> pending with a fresh attempt budget, then publish. Commits."""
    new_attempt = item.attempt + 1
    old = move_item(
        item.id,
        item.job_id,
        "pending",
        expect=("failed", "cancelled"),
        attempt=item.attempt,
        values={
            "attempt": new_attempt,
            "max_attempts": new_attempt + settings().max_attempts - 1,
            "error": None,
            "error_code": None,
            "progress": 0.0,
            "outputs": None,
            "manifest_key": None,
            "finished_at": None,
            "started_at": None,
        },
        kind="item.retry",
        detail=reason,
        event_attempt=new_attempt,
    )
    if old is None:
        db.session.rollback()
        return False
    job = db.session.get(Job, item.job_id)
    if job is not None and job.cancelled_at is not None:
        job.cancelled_at = None
    db.session.commit()
    if fill:
        scheduler.fill_all([item.queue])
    return True


def retry_failed(job: Job) -> int:
    items = list(db.session.scalars(select(Item).where(Item.job_id == job.id, Item.status == "failed")))
    db.session.commit()
    count = sum(1 for item in items if retry_item(item, "job retry: failed items", fill=False))
    if count:
        scheduler.fill_all()
    return count
