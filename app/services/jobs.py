"""Submitting, dispatching, cancelling and retrying jobs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy import text as sa_text
from sqlalchemy.exc import IntegrityError

from app.broker import coordination
from app.config import settings
from app.db import db
from app.errors import InputConflict, InvalidInput
from app.models import PRIORITIES, Asset, Item, Job, User, new_id, utcnow
from app.provider_registry import provider as find_provider
from app.provider_registry import validate
from app.services import intake, policy, scheduler, webhooks
from app.services.items import add_event, move_item, move_job_items, settle_job
from app.storage_factory import get_storage

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
    # A folder to take every image from instead of `inputs`, and a file of prompts per image.
    inputs_prefix: Any = None
    prompts_file: Any = None

    def request_hash(self) -> str:
        """sha256 of the submission as canonical JSON, the idempotency key itself left out."""
        fields = asdict(self)
        fields.pop("idempotency_key")
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
        return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


class IdempotencyConflict(InputConflict):
    """The idempotency key was used before with a different submission (answered 409, as Stripe does)."""

    code = "idempotency_conflict"

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
        raise InvalidInput(
            "max_concurrency", "max_concurrency must be a whole number from 1, or null for no cap"
        )
    return value


def check_priority(value: Any) -> str:
    if not isinstance(value, str) or value not in PRIORITIES:
        raise InvalidInput("priority", f"priority must be one of {list(PRIORITIES)}")
    return value


def _check_exist(keys: list[str]) -> None:
    """Every key names an image the system knows (an upload) or an object in storage."""
    known = set()
    unique = list(dict.fromkeys(keys))
    for start in range(0, len(unique), 500):
        chunk = unique[start : start + 500]
        known.update(db.session.scalars(select(Asset.key).where(Asset.key.in_(chunk))))
    store = get_storage()
    for i, key in enumerate(keys):
        if key not in known and not store.exists(key):
            raise InvalidInput(f"inputs[{i}]", f"input {key!r} does not exist in storage")
        known.add(key)


@dataclass
class _ItemRows:
    """Items to insert, as columns."""

    ids: list[str]
    keys: list[str]
    queues: list[str]
    prompts: list[str | None]
    concepts: list[list[str] | None]
    params: list[dict[str, Any] | None]


class _Items:
    """Turns entries into item rows: each entry with values of its own is validated against the
    provider's schema as a whole job would be, and keeps only what differs from the job's."""

    def __init__(self, provider: Any, spec: Any, sub: Submission) -> None:
        self.provider, self.spec, self.sub = provider, spec, sub
        self.raw_params = dict(sub.params or {})
        self.count = 0

    def rows(self, entries: list[intake.Entry]) -> _ItemRows:
        out = _ItemRows([], [], [], [], [], [])
        for entry in entries:
            index = self.count
            self.count += 1
            spec, prompt, concepts, params = self.spec, None, None, None
            if entry.own:
                try:
                    spec = validate(
                        self.provider,
                        self.spec.model,
                        entry.prompt if entry.prompt is not None else self.sub.prompt,
                        entry.prompts if entry.prompts is not None else self.sub.prompts,
                        {**self.raw_params, **(entry.params or {})},
                    )
                except InvalidInput as exc:
                    field = intake.field_of(entry, index, exc.field)
                    raise InvalidInput(field, f"{field}: {exc.message}") from None
                prompt = spec.prompt if entry.prompt is not None else None
                concepts = spec.prompts if entry.prompts is not None else None
                params = {k: v for k, v in spec.params.items() if self.spec.params.get(k) != v} or None
            out.ids.append(new_id())
            out.keys.append(entry.key)
            out.queues.append(self.provider.queue_for(spec, index))
            out.prompts.append(prompt)
            out.concepts.append(concepts)
            out.params.append(params)
        return out


def _job_spec(provider: Any, sub: Submission, entries: list[intake.Entry] | None) -> Any:
    """The job's own spec. Where every item brings its own prompt (or concepts), the job needs none."""
    try:
        return validate(provider, sub.model, sub.prompt, sub.prompts, sub.params or {})
    except InvalidInput as exc:
        # The job's prompt is only a default when every item has its own.
        field = exc.field
        if not entries or field not in ("prompt", "prompts"):
            raise
        if not all((e.prompt if field == "prompt" else e.prompts) is not None for e in entries):
            raise
        first = entries[0]
        spec = validate(
            provider,
            sub.model,
            first.prompt if first.prompt is not None else sub.prompt,
            first.prompts if first.prompts is not None else sub.prompts,
            sub.params or {},
        )
        if field == "prompt":
            return dataclasses.replace(spec, prompt=None)
        return dataclasses.replace(spec, prompts=[])


def create_job(sub: Submission, user_id: int | None) -> tuple[Job, bool]:
    """Validate and store a job with its items (pending), then publish. Returns (job, created)."""
    request_hash = None
    if sub.idempotency_key is not None:
        if not isinstance(sub.idempotency_key, str) or not 0 < len(sub.idempotency_key) <= 200:
            raise InvalidInput("idempotency_key", "idempotency_key must be a string of 1 to 200 characters")
        request_hash = sub.request_hash()
        existing = db.session.scalar(
            select(Job).where(Job.created_by == user_id, Job.idempotency_key == sub.idempotency_key)
        )
        if existing is not None:
            return _same_request(existing, request_hash), False
    provider = find_provider(sub.provider)
    if sub.prompt is not None and not isinstance(sub.prompt, str):
        raise InvalidInput("prompt", "prompt must be a string")
    if sub.prompts is not None and (
        not isinstance(sub.prompts, list) or not all(isinstance(p, str) for p in sub.prompts)
    ):
        raise InvalidInput("prompts", "prompts must be a list of strings")
    if sub.params is not None and not isinstance(sub.params, dict):
        raise InvalidInput("params", "params must be an object")
    priority = check_priority("normal" if sub.priority is None else sub.priority)
    max_concurrency = check_max_concurrency(sub.max_concurrency)
    if sub.model is not None and not isinstance(sub.model, str):
        raise InvalidInput("model", "model must be a string")
    limit = settings().max_items_per_job
    prefix, entries = None, None
    if sub.inputs_prefix is not None:
        if sub.inputs is not None:
            raise InvalidInput("inputs_prefix", "give inputs or inputs_prefix, not both")
        prefix = intake.check_prefix(sub.inputs_prefix)
    else:
        entries = intake.parse_inputs(sub.inputs, limit)
    prompts_file = intake.read_prompts_file(sub.prompts_file) if sub.prompts_file is not None else None
    if entries is not None:
        _check_exist([e.key for e in entries])
        if prompts_file is not None:
            names = intake.uploaded_names([e.key for e in entries])
            entries = [prompts_file.apply(e, names.get(e.key)) for e in entries]
    spec = _job_spec(provider, sub, entries)
    webhook, webhook_events = webhooks.parse_subscription(sub.webhook, sub.webhook_events)
    if webhook and user_id is not None and (user := db.session.get(User, user_id)) is not None:
        # Made now, in the web request, so the sender never has to make one (two control processes
        # could each make a different one).
        webhooks.secret_of(user)
    routed_from, reroute = None, None
    # Per-image work stays where it was sent: each image's parameters were written for that provider.
    per_item = prefix is not None or prompts_file is not None or any(e.own for e in entries or [])
    for candidate in [] if per_item else policy.reroutes(provider.name):
        # The admin's parameters were written for the provider asked for, not the target: the target's
        # model defaults apply. A job no target can take (e.g. a prompt over its limit) stays and waits.
        try:
            target_spec = validate(candidate.target, candidate.rule.to_model, sub.prompt, sub.prompts, {})
        except InvalidInput:
            continue
        spec, routed_from, reroute = target_spec, provider.name, candidate
        provider = candidate.target
        break

    job = Job(
        id=new_id(),
        provider=provider.name,
        model=spec.model,
        prompt=spec.prompt,
        prompts=spec.prompts,
        params=spec.params,
        priority=priority,
        status="queued",
        total=0,
        n_pending=0,
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
    make = _Items(provider, spec, sub)
    queues: set[str] = set()
    try:
        db.session.flush()
        batches = [entries] if entries is not None else _prefix_batches(prefix or "", prompts_file, limit)
        for batch in batches:
            rows = make.rows(batch)
            insert_items(job.id, provider.name, rows, now, first_idx=make.count - len(batch))
            queues.update(rows.queues)
        if make.count == 0:
            raise InvalidInput("inputs_prefix", f"no images (PNG, JPEG or WEBP) under {prefix!r}")
        db.session.execute(
            update(Job).where(Job.id == job.id).values(total=make.count, n_pending=make.count),
            execution_options={"synchronize_session": False},
        )
        source = f" from {prefix}" if prefix else ""
        add_event(
            job.id,
            "job.created",
            detail=f"{make.count} items{source}, provider {provider.name}, model {spec.model}",
        )
        if prompts_file is not None:
            unmatched = prompts_file.unmatched()
            detail = f"prompts file {sub.prompts_file}: {len(prompts_file.used)} rows used"
            if unmatched:
                shown = ", ".join(unmatched[:5]) + (" ..." if len(unmatched) > 5 else "")
                detail += f", {len(unmatched)} matched no image ({shown})"
            add_event(job.id, "job.prompts_file", detail=detail)
        if reroute is not None:
            detail = f"sent to {provider.label or provider.name} {spec.model} instead of {routed_from}: "
            detail += reroute.reason
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
    except InvalidInput:
        db.session.rollback()
        raise
    db.session.refresh(job)

    # The first items enter their queue's window now; the rest follow as workers free up.
    filled = scheduler.fill_all(queues)
    job.broker_unreachable = any(not f.broker_reachable for f in filled)  # type: ignore[attr-defined]
    return job, True


def _prefix_batches(
    prefix: str, prompts_file: intake.PromptsFile | None, limit: int
) -> Iterator[list[intake.Entry]]:
    """A folder's images as entries, a storage page at a time (never the whole list at once)."""
    seen = 0
    for keys in intake.keys_under(prefix):
        seen += len(keys)
        if seen > limit:
            raise InvalidInput(
                "inputs_prefix", f"more than {limit} images under {prefix!r} (MAX_ITEMS_PER_JOB)"
            )
        entries = [intake.Entry(key=k) for k in keys]
        if prompts_file is not None:
            names = intake.uploaded_names(keys)
            entries = [prompts_file.apply(e, names.get(e.key)) for e in entries]
        yield entries


# One statement per batch of items on Postgres: arrays in, rows out (a 10,000-item batch in a
# fraction of the time an executemany of row dicts takes).
_INSERT_ITEMS_PG = sa_text(
    """
    INSERT INTO items (id, job_id, idx, input_key, prompt, prompts, params, provider, queue, status,
                       attempt, max_attempts, progress, created_at, updated_at)
    SELECT t.id, :job_id, :first_idx + t.idx - 1, t.input_key, t.prompt, CAST(t.prompts AS json),
           CAST(t.params AS json), :provider, t.queue, 'pending', 1, :max_attempts, 0.0, :now, :now
    FROM unnest(CAST(:ids AS varchar[]), CAST(:keys AS varchar[]), CAST(:queues AS varchar[]),
                CAST(:prompts AS text[]), CAST(:concepts AS text[]), CAST(:params AS text[]))
         WITH ORDINALITY AS t(id, input_key, queue, prompt, prompts, params, idx)
    """
)


def _json_or_none(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def insert_items(job_id: str, provider: str, rows: _ItemRows, now: datetime, first_idx: int = 0) -> None:
    max_attempts = settings().max_attempts
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(
            _INSERT_ITEMS_PG,
            {
                "job_id": job_id,
                "provider": provider,
                "max_attempts": max_attempts,
                "now": now,
                "first_idx": first_idx,
                "ids": rows.ids,
                "keys": rows.keys,
                "queues": rows.queues,
                "prompts": rows.prompts,
                "concepts": [_json_or_none(c) for c in rows.concepts],
                "params": [_json_or_none(p) for p in rows.params],
            },
        )
        return
    values = [
        {
            "id": item_id,
            "job_id": job_id,
            "idx": first_idx + i,
            "input_key": key,
            "prompt": prompt,
            "prompts": concepts,
            "params": params,
            "provider": provider,
            "queue": queue,
            "status": "pending",
            "attempt": 1,
            "max_attempts": max_attempts,
            "progress": 0.0,
            "created_at": now,
            "updated_at": now,
        }
        for i, (item_id, key, queue, prompt, concepts, params) in enumerate(
            zip(rows.ids, rows.keys, rows.queues, rows.prompts, rows.concepts, rows.params, strict=True)
        )
    ]
    db.session.execute(insert(Item), values)


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
