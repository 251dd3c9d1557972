"""The API's JSON bodies, built as plain dicts (a 1,000-item job read is mostly encoding time).

Each function builds one of app/contract/api.py's response models (`job_json` a Job, `item_json`
an Item, `delivery_json` a WebhookDelivery), which the OpenAPI document is generated from; a key
added here without the model is caught by tests/app/test_api_contract.py and the fuzz run's schema
check. Add fields freely; never rename one."""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime
from typing import Any

from app.broker import celery_client
from app.config import settings
from app.coordination import redis_client
from app.models import Item, Job
from app.storage_factory import get_storage

log = logging.getLogger(__name__)


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.isoformat() if value.tzinfo else value.isoformat() + "Z"


def live_progress(attempts: dict[str, int]) -> dict[str, float]:
    """Progress of running items (id -> attempt) from the results backend (workers write it there)."""
    item_ids = list(attempts)
    if not item_ids:
        return {}
    try:
        backend = celery_client().backend
        keys = [backend.get_key_for_task(i) for i in item_ids]
        values = redis_client(settings().result_backend).mget(keys)
    except Exception as exc:  # noqa: BLE001 - progress is decoration; the record is Postgres
        log.debug("no live progress: %s", exc)
        return {}
    found: dict[str, float] = {}
    for item_id, raw in zip(item_ids, values, strict=True):
        if not raw:
            continue
        try:
            meta = json.loads(raw)
            result = meta.get("result") or {}
            # A retried item's task id stays the same: skip what an earlier attempt left there.
            if (
                meta.get("status") == "PROGRESS"
                and isinstance(result, dict)
                and result.get("attempt") in (None, attempts[item_id])
            ):
                found[item_id] = float(result.get("progress") or 0.0)
        except (ValueError, TypeError, AttributeError):
            continue
    return found


class _SignedUrls:
    """Signed output URLs, reused while most of their lifetime is left.

    The job page polls a job every second or two; signing every output URL again on every
    poll is most of the cost of a job read (and on S3 a presign is not cheap either). A URL is
    handed out again only while at least two thirds of its lifetime remain."""

    MAX = 50_000

    def __init__(self) -> None:
        self._urls: dict[tuple[str, str], tuple[str, float]] = {}

    def get(self, key: str, filename: str) -> str:
        now = time.monotonic()
        hit = self._urls.get((key, filename))
        if hit is not None and hit[1] > now:
            return hit[0]
        ttl = settings().signed_url_ttl_s
        url = get_storage().signed_url(key, expires_s=ttl, filename=filename)
        if len(self._urls) >= self.MAX:
            self._urls.clear()
        self._urls[(key, filename)] = (url, now + ttl / 3)
        return url


signed_urls = _SignedUrls()


def outputs_json(item: Any) -> list[dict[str, Any]]:
    out = []
    for o in item.outputs or []:
        name = f"{item.idx:05d}-{o['key'].rsplit('/', 1)[-1]}"
        out.append(
            {
                "key": o["key"],
                "url": signed_urls.get(o["key"], name),
                "content_type": o.get("content_type"),
                "role": o.get("role"),
                "size": o.get("size"),
            }
        )
    return out


# The columns an item's JSON needs: the job read selects these rather than whole ORM objects.
ITEM_COLUMNS = (
    Item.id,
    Item.job_id,
    Item.idx,
    Item.input_key,
    Item.prompt,
    Item.prompts,
    Item.params,
    Item.status,
    Item.attempt,
    Item.max_attempts,
    Item.progress,
    Item.outputs,
    Item.error,
    Item.error_code,
    Item.worker,
    Item.device,
    Item.remote_id,
    Item.meta,
    Item.cost_usd,
    Item.duration_ms,
    Item.queue,
    Item.created_at,
    Item.queued_at,
    Item.started_at,
    Item.finished_at,
)


def item_json(item: Any, progress: dict[str, float] | None = None, job: Any = None) -> dict[str, Any]:
    """An item (an Item or a row of ITEM_COLUMNS) as the API shows it: with the prompt, concepts
    and parameters it runs with (its own, else its job's -- `job`, or an Item's own job)."""
    if job is None and isinstance(item, Item):
        job = item.job
    value = item.progress
    if item.status == "running" and progress and item.id in progress:
        value = progress[item.id]
    elif item.status == "succeeded":
        value = 1.0
    return {
        "id": item.id,
        "job_id": item.job_id,
        "index": item.idx,
        "input_key": item.input_key,
        "prompt": item.prompt if item.prompt is not None else getattr(job, "prompt", None),
        "prompts": item.prompts if item.prompts is not None else list(getattr(job, "prompts", None) or []),
        # Only what differs from the job's parameters (the job shows the rest).
        "params": item.params or {},
        "status": item.status,
        "attempt": item.attempt,
        "max_attempts": item.max_attempts,
        "progress": round(value or 0.0, 4),
        "outputs": outputs_json(item) if item.status == "succeeded" else [],
        "error": item.error,
        "error_code": item.error_code,
        "worker": item.worker,
        "device": item.device,
        "remote_id": item.remote_id,
        "meta": item.meta or {},
        "cost_usd": item.cost_usd,
        "duration_ms": item.duration_ms,
        "queue": item.queue,
        "created_at": iso(item.created_at),
        "queued_at": iso(item.queued_at),
        "started_at": iso(item.started_at),
        "finished_at": iso(item.finished_at),
    }


def job_progress(job: Job, running_progress: float = 0.0) -> float:
    if not job.total:
        return 0.0
    done = job.n_succeeded + job.n_failed + job.n_cancelled
    return round(min(1.0, (done + running_progress) / job.total), 4)


def job_json(
    job: Job, items: list[Any] | None = None, running_progress: float | None = None
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": job.id,
        "status": job.status,
        "provider": job.provider,
        "model": job.model,
        "prompt": job.prompt,
        "prompts": job.prompts or [],
        "params": job.params or {},
        "priority": job.priority,
        "total": job.total,
        "progress": job_progress(job, running_progress or 0.0),
        "counts": job.counts(),
        "created_by": job.creator.email if job.creator else None,
        "idempotency_key": job.idempotency_key,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "cancelled_at": iso(job.cancelled_at),
        "waiting_reason": job.waiting_reason,
        "routed_from": job.routed_from,
        "webhook": job.webhook,
        "webhook_events": job.webhook_events or [],
        "paused_at": iso(job.paused_at),
        "max_concurrency": job.max_concurrency,
    }
    if items is not None:
        progress = live_progress({i.id: i.attempt for i in items if i.status == "running"})
        data["items"] = [item_json(i, progress, job) for i in items]
        if running_progress is None:
            data["progress"] = job_progress(job, sum(progress.values()))
    return data


def delivery_json(d: Any) -> dict[str, Any]:
    """A webhook delivery and how it went (the job's delivery log)."""
    return {
        "id": d.id,
        "webhook_id": d.msg_id,
        "event": d.event,
        "item_id": d.item_id,
        "url": d.url,
        "status": d.status,
        "attempts": d.attempts,
        "last_attempt_at": iso(d.last_attempt_at),
        "last_status_code": d.last_status_code,
        "last_error": d.last_error,
        "last_latency_ms": d.last_latency_ms,
        # While pending: when the next attempt is due (or, while one is being sent, its claim's end).
        "next_attempt_at": iso(d.next_attempt_at) if d.status == "pending" else None,
        "created_at": iso(d.created_at),
        "delivered_at": iso(d.delivered_at),
    }
