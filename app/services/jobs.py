"""Submitting, dispatching, cancelling and retrying jobs."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy import text as sa_text
from sqlalchemy.exc import IntegrityError

from app import storage as storage_mod
from app.broker import coordination, item_payload, publish_items
from app.config import settings
from app.db import db
from app.models import PRIORITIES, UNFINISHED, Asset, Item, Job, User, new_id, utcnow
from app.providers import registry
from app.services import policy, webhooks
from app.services.items import add_event, mark_queued, move_item, move_job_items, settle_job
from app.storage_factory import get_storage
from providers import ParamError, get_provider

log = logging.getLogger(__name__)

# Up to this many items are published inside the request; bigger jobs are handed to
# the control worker so the API answers at once.
INLINE_PUBLISH_MAX = 200


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
    if sub.idempotency_key is not None:
        if not isinstance(sub.idempotency_key, str) or not 0 < len(sub.idempotency_key) <= 200:
            raise ParamError("idempotency_key", "idempotency_key must be a string of 1 to 200 characters")
        existing = db.session.scalar(
            select(Job).where(Job.created_by == user_id, Job.idempotency_key == sub.idempotency_key)
        )
        if existing is not None:
            return existing, False
    provider = get_provider(registry(), sub.provider)
    if sub.prompt is not None and not isinstance(sub.prompt, str):
        raise ParamError("prompt", "prompt must be a string")
    if sub.prompts is not None and (
        not isinstance(sub.prompts, list) or not all(isinstance(p, str) for p in sub.prompts)
    ):
        raise ParamError("prompts", "prompts must be a list of strings")
    if sub.params is not None and not isinstance(sub.params, dict):
        raise ParamError("params", "params must be an object")
    priority = "normal" if sub.priority is None else sub.priority
    if not isinstance(priority, str) or priority not in PRIORITIES:
        raise ParamError("priority", f"priority must be one of {list(PRIORITIES)}")
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
        # The admin's WAN parameters do not apply to Runway: its model defaults do.
        routed_from = provider.name
        provider = get_provider(registry(), "runway")
        spec = provider.validate(settings().wan_fallback_model, sub.prompt, None, {})

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
        routed_from=routed_from,
        webhook=webhook,
        webhook_events=webhook_events,
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
        return existing, False

    if len(item_ids) <= INLINE_PUBLISH_MAX:
        dispatch_items(job.id, item_ids)
    else:
        hand_to_control(job.id)
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


def hand_to_control(job_id: str) -> None:
    from app.broker import celery_client

    try:
        celery_client().send_task("control.dispatch_job", args=[job_id], queue="control", retry=False)
    except Exception as exc:  # noqa: BLE001 - the reconciler publishes pending items later
        log.warning("could not hand job %s to the control queue: %s", job_id, exc)


def dispatch_items(job_id: str, item_ids: list[str] | None = None) -> int:
    """Publish pending items of a job (all, or the given ones) and mark them queued. Commits."""
    job = db.session.get(Job, job_id)
    if job is None:
        return 0
    query = select(Item).where(Item.job_id == job_id, Item.status == "pending")
    if item_ids is not None:
        query = query.where(Item.id.in_(item_ids)) if len(item_ids) <= 1000 else query
    items = list(db.session.scalars(query.order_by(Item.idx)))
    if job.provider == "runway" and items:
        allowed, reason = policy.runway_budget(len(items), job.model, job.params or {})
        items = items[:allowed]
        if reason != job.waiting_reason:
            job.waiting_reason = reason
            add_event(
                job.id,
                "job.waiting" if reason else "job.resumed",
                detail=reason or "spending cap allows work again",
            )
    # Build the messages before the commit: it expires the loaded rows (a reload each otherwise).
    priority = PRIORITIES.get(job.priority, 3)
    messages = [(item_payload(item, job), item.queue, priority) for item in items]
    attempts = {item.id: item.attempt for item in items}
    db.session.commit()  # release locks before talking to the broker
    if not messages:
        return 0
    published = [(item_id, attempts[item_id]) for item_id in publish_items(messages)]
    count = mark_queued(job_id, published)
    db.session.commit()
    return count


def cancel_job(job: Job) -> int:
    """Cancel every unfinished item; running ones stop at their next cancel check. Commits."""
    now = utcnow()
    # Items first, then the job row: the lock order every writer keeps.
    moved, deltas = move_job_items(job.id, "cancelled", UNFINISHED, {"finished_at": now})
    db.session.execute(
        update(Job).where(Job.id == job.id, Job.cancelled_at.is_(None)).values(cancelled_at=now),
        execution_options={"synchronize_session": False},
    )
    add_event(job.id, "job.cancel", detail=f"cancel requested: {len(moved)} unfinished items cancelled")
    settle_job(job.id, deltas)
    db.session.commit()
    try:
        coordination().cancel(moved)
    except Exception as exc:  # noqa: BLE001 - stale results are fenced out by the control side
        log.warning("could not set cancel flags for job %s: %s", job.id, exc)
    return len(moved)


def retry_item(item: Item, reason: str = "retry requested") -> bool:
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
    dispatch_items(item.job_id, [item.id])
    return True


def retry_failed(job: Job) -> int:
    items = list(db.session.scalars(select(Item).where(Item.job_id == job.id, Item.status == "failed")))
    db.session.commit()
    return sum(1 for item in items if retry_item(item, "job retry: failed items"))
