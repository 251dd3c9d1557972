"""New job, the job list, one job with its items, its event log, and the job actions."""

from __future__ import annotations

import base64
import math
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import Response, abort, flash, redirect, render_template, request, url_for
from sqlalchemy import select, tuple_

from app.db import db
from app.models import ITEM_STATUSES, PRIORITIES, Event, Item, Job, WebhookDelivery
from app.providers import registry
from app.serializers import job_json, job_progress
from app.services import jobs as job_service
from app.services import scheduler, webhook_delivery
from providers import ParamError
from web.auth import may_change_job, session_user
from web.views import bp

JOB_STATUSES = ("queued", "running", "paused", "succeeded", "failed", "cancelled")
JOBS_PAGE_SIZE = 25
ITEMS_PAGE_SIZE = 100
EVENTS_PAGE_SIZE = 200
# Webhook deliveries shown on a job page (the latest); the API lists them all.
WEBHOOK_LOG_ROWS = 50


# --- new job ------------------------------------------------------------------------------


@dataclass
class Engine:
    """One choice in the form: a provider with one of its models."""

    value: str
    provider: dict[str, Any]
    model: dict[str, Any]

    @property
    def basic_params(self) -> list[dict[str, Any]]:
        return [p for p in self.model["params"] if not p.get("advanced")]

    @property
    def advanced_params(self) -> list[dict[str, Any]]:
        return [p for p in self.model["params"] if p.get("advanced")]


def engines() -> list[Engine]:
    out = []
    # The diagnostic provider goes last: it is for checking workers, not for real work.
    for provider in sorted(registry().values(), key=lambda p: p.name == "echo"):
        described = provider.describe()
        for model in described["models"]:
            out.append(Engine(f"{described['name']}:{model['name']}", described, model))
    return out


def _param_value(spec: dict[str, Any], raw: str | None) -> Any:
    """A form string as the parameter's type; None leaves the provider's default."""
    name, kind = spec["name"], spec["type"]
    field = f"params.{name}"
    if kind == "bool":
        return raw == "1"
    if raw is None or raw.strip() == "":
        return None
    raw = raw.strip()
    if spec.get("choices"):
        for choice in spec["choices"]:
            if str(choice) == raw:
                return choice
        raise ParamError(field, f"{name} must be one of {', '.join(str(c) for c in spec['choices'])}")
    if kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise ParamError(field, f"{name} must be a whole number") from None
    if kind == "float":
        try:
            return float(raw)
        except ValueError:
            raise ParamError(field, f"{name} must be a number") from None
    if kind == "list[str]":
        return [line.strip() for line in raw.replace(",", "\n").splitlines() if line.strip()]
    return raw


def _concepts(raw: str) -> list[str]:
    return [c.strip() for c in raw.replace(",", "\n").splitlines() if c.strip()]


def _submit(form: Any, options: dict[str, Engine]) -> Job:
    choice = form.get("engine") or ""
    engine = options.get(choice)
    if engine is None:
        raise ParamError("engine", "choose what to run the images with")
    provider, model = engine.provider, engine.model
    params: dict[str, Any] = {}
    for spec in model["params"]:
        value = _param_value(spec, form.get(f"p:{engine.value}:{spec['name']}"))
        if value is not None:
            params[spec["name"]] = value
    prompt = form.get("prompt") if provider["prompt_field"] == "prompt" else None
    prompts = _concepts(form.get("prompts") or "") if provider["prompt_field"] == "prompts" else None
    sub = job_service.Submission(
        provider=provider["name"],
        model=model["name"],
        inputs=form.getlist("inputs"),
        prompt=prompt,
        prompts=prompts,
        params=params,
        priority=form.get("priority") or "normal",
        idempotency_key=(form.get("idempotency_key") or None),
        max_concurrency=_max_concurrency(form.get("max_concurrency")),
    )
    user = session_user()
    job, _ = job_service.create_job(sub, user.id if user else None)
    return job


@bp.route("/jobs/new", methods=["GET", "POST"])
def new_job() -> Response | str | tuple[str, int]:
    options = {e.value: e for e in engines()}
    form = request.form
    errors: dict[str, str] = {}
    if request.method == "POST":
        try:
            job = _submit(form, options)
        except ParamError as exc:
            db.session.rollback()
            known = ("engine", "inputs", "prompt", "prompts", "priority", "max_concurrency")
            field = exc.field if exc.field in known else None
            if exc.field in ("provider", "model"):
                field = "engine"
            elif exc.field.startswith("params."):
                field = exc.field
            errors[field or "form"] = exc.message
        else:
            db.session.refresh(job)
            images = f"{job.total} image{'s' if job.total != 1 else ''}"
            if job.waiting_reason:
                flash(f"Job saved ({images}), but items wait: {job.waiting_reason}.", "warning")
            elif getattr(job, "broker_unreachable", False):
                flash(
                    "The job is saved, but the broker is unreachable right now: its items will be "
                    "queued as soon as it is back.",
                    "warning",
                )
            elif job.routed_from:
                flash(
                    f"Job started: {images}, sent to {job.provider} instead of {job.routed_from}.", "success"
                )
            else:
                flash(f"Job started: {images}.", "success")
            return redirect(url_for("admin.job_page", job_id=job.id, created=1))
    default = next(iter(options.values())).value if options else ""
    preferred = [e.value for e in options.values() if e.provider["name"] != "echo"]
    selected = form.get("engine") or (preferred[0] if preferred else default)
    body = render_template(
        "job_new.html",
        engines=list(options.values()),
        selected=selected,
        form=form,
        inputs=form.getlist("inputs"),
        errors=errors,
        params_error=any(k.startswith("params.") for k in errors),
        priorities=list(PRIORITIES),
        idempotency_key=form.get("idempotency_key") or uuid.uuid4().hex,
        engines_data={
            e.value: {
                "provider": e.provider["name"],
                "prompt_field": e.provider["prompt_field"],
                "cost_per_item_usd": e.model["cost_per_item_usd"],
                "seconds_per_item": e.model["seconds_per_item"],
                "constraints": e.model["constraints"],
            }
            for e in options.values()
        },
    )
    return (body, 400) if errors else body


# --- job list -----------------------------------------------------------------------------


def _encode_cursor(job: Job) -> str:
    # The same cursor as the API's /api/v1/jobs, so links can move between the two.
    return base64.urlsafe_b64encode(f"{job.created_at.isoformat()}|{job.id}".encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, str] | None:
    try:
        created, job_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        return datetime.fromisoformat(created), job_id
    except (ValueError, UnicodeDecodeError):
        return None


@bp.get("/jobs")
def jobs() -> str:
    status = request.args.get("status") or ""
    provider = request.args.get("provider") or ""
    cursor = request.args.get("cursor") or ""
    try:
        limit = min(100, max(1, int(request.args.get("limit") or JOBS_PAGE_SIZE)))
    except ValueError:
        limit = JOBS_PAGE_SIZE
    query = select(Job)
    if status:
        query = query.where(Job.status == status)
    if provider:
        query = query.where(Job.provider == provider)
    if cursor:
        position = _decode_cursor(cursor)
        if position is None:
            abort(400, "that page link is not valid; start again from the first page")
        query = query.where(tuple_(Job.created_at, Job.id) < tuple_(*position))
    rows = list(db.session.scalars(query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)))
    next_cursor = _encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    rows = rows[:limit]
    return render_template(
        "jobs.html",
        jobs=rows,
        progress={j.id: job_progress(j) for j in rows},
        status=status,
        provider=provider,
        statuses=JOB_STATUSES,
        providers=sorted(registry()),
        next_cursor=next_cursor,
        cursor=cursor,
        limit=limit if request.args.get("limit") else None,
    )


# --- one job ------------------------------------------------------------------------------


def _job_or_404(job_id: str) -> Job:
    job = db.session.get(Job, job_id)
    if job is None:
        abort(404, f"there is no job {job_id}")
    return job


def _job_to_change(job: Job) -> Job:
    """The job, if the signed-in user may change it (their own, or any for an admin); else a 403 page."""
    if not may_change_job(session_user(), job):
        owner = job.creator.email if job.creator else "nobody"
        abort(403, f"this job belongs to {owner}; only they or an admin can change it")
    return job


@bp.get("/jobs/<job_id>")
def job_page(job_id: str) -> str:
    job = _job_or_404(job_id)
    item_status = request.args.get("item_status") or ""
    if item_status and item_status not in ITEM_STATUSES:
        item_status = ""
    total = job.counts()[item_status] if item_status else job.total
    pages = max(1, math.ceil(total / ITEMS_PAGE_SIZE))
    try:
        page = min(pages, max(1, int(request.args.get("page") or 1)))
    except ValueError:
        page = 1
    offset = (page - 1) * ITEMS_PAGE_SIZE
    query = select(Item).where(Item.job_id == job.id)
    if item_status:
        query = query.where(Item.status == item_status)
    items = list(db.session.scalars(query.order_by(Item.idx).offset(offset).limit(ITEMS_PAGE_SIZE)))
    data = job_json(job, items)
    deliveries: list[WebhookDelivery] = []
    if job.webhook:
        deliveries = list(
            db.session.scalars(
                select(WebhookDelivery)
                .where(WebhookDelivery.job_id == job.id)
                .order_by(WebhookDelivery.id.desc())
                .limit(WEBHOOK_LOG_ROWS + 1)
            )
        )
    return render_template(
        "job.html",
        deliveries=list(reversed(deliveries[:WEBHOOK_LOG_ROWS])),
        more_deliveries=len(deliveries) > WEBHOOK_LOG_ROWS,
        job=job,
        data=data,
        items=data["items"],
        page=page,
        pages=pages,
        offset=offset,
        page_size=ITEMS_PAGE_SIZE,
        shown_total=total,
        item_status=item_status,
        item_statuses=ITEM_STATUSES,
        priorities=list(PRIORITIES),
        can_change=may_change_job(session_user(), job),
        clear_selection=request.args.get("created") == "1",
        back=url_for(
            "admin.job_page", job_id=job.id, page=page if page > 1 else None, item_status=item_status or None
        ),
    )


@bp.post("/jobs/<job_id>/webhooks/<int:delivery_id>/redeliver")
def redeliver_webhook(job_id: str, delivery_id: int) -> Response:
    job = _job_to_change(_job_or_404(job_id))
    delivery = db.session.get(WebhookDelivery, delivery_id)
    if delivery is None or delivery.job_id != job.id:
        abort(404, f"job {job_id} has no webhook delivery {delivery_id}")
    webhook_delivery.redeliver(delivery)
    db.session.commit()
    flash(f"{delivery.event} will be sent again (same webhook-id).", "success")
    return _back_to_job(job)


def _back_to_job(job: Job) -> Response:
    target = request.form.get("back") or ""
    if not target.startswith(f"/jobs/{job.id}"):
        target = url_for("admin.job_page", job_id=job.id)
    return redirect(target)


@bp.post("/jobs/<job_id>/cancel")
def cancel_job(job_id: str) -> Response:
    job = _job_to_change(_job_or_404(job_id))
    count = job_service.cancel_job(job)
    flash(
        f"Cancelled {count} unfinished item{'s' if count != 1 else ''}."
        if count
        else "Nothing left to cancel.",
        "success" if count else "info",
    )
    return _back_to_job(job)


@bp.post("/jobs/<job_id>/pause")
def pause_job(job_id: str) -> Response:
    job = _job_to_change(_job_or_404(job_id))
    if scheduler.pause_job(job):
        flash("Job paused: running items finish, no new item starts until you resume it.", "success")
    else:
        flash(f"The job is {job.status}; nothing to pause.", "info")
    return _back_to_job(job)


@bp.post("/jobs/<job_id>/resume")
def resume_job(job_id: str) -> Response:
    job = _job_to_change(_job_or_404(job_id))
    if scheduler.resume_job(job):
        flash("Job resumed.", "success")
    else:
        flash("The job was not paused.", "info")
    return _back_to_job(job)


@bp.post("/jobs/<job_id>/schedule")
def schedule_job(job_id: str) -> Response:
    job = _job_to_change(_job_or_404(job_id))
    try:
        changes = {
            "priority": job_service.check_priority(request.form.get("priority") or job.priority),
            "max_concurrency": _max_concurrency(request.form.get("max_concurrency")),
        }
    except ParamError as exc:
        flash(f"Not saved: {exc.message}.", "error")
        return _back_to_job(job)
    said = scheduler.update_job(job, changes)
    flash(f"Saved: {'; '.join(said)}." if said else "Nothing changed.", "success" if said else "info")
    return _back_to_job(job)


def _max_concurrency(raw: str | None) -> int | None:
    """The form's "max at once": empty is no cap."""
    raw = (raw or "").strip()
    if not raw:
        return None
    if not raw.isdigit():
        raise ParamError("max_concurrency", "max at once must be a whole number from 1, or empty for no cap")
    return job_service.check_max_concurrency(int(raw))


@bp.post("/jobs/<job_id>/retry")
def retry_job(job_id: str) -> Response:
    job = _job_to_change(_job_or_404(job_id))
    count = job_service.retry_failed(job)
    flash(
        f"Retrying {count} failed item{'s' if count != 1 else ''}." if count else "No failed items to retry.",
        "success" if count else "info",
    )
    return _back_to_job(job)


@bp.post("/items/<item_id>/retry")
def retry_item(item_id: str) -> Response:
    item = db.session.get(Item, item_id)
    if item is None:
        abort(404, f"there is no item {item_id}")
    job = _job_to_change(item.job)
    index, next_attempt = item.idx, item.attempt + 1
    if item.status not in ("failed", "cancelled"):
        flash(f"Item #{index} is {item.status}; only failed or cancelled items can be retried.", "warning")
    elif job_service.retry_item(item, "item retry requested"):
        flash(f"Retrying item #{index} (attempt {next_attempt}).", "success")
    else:
        flash(f"Item #{index} changed state meanwhile; look again and retry if needed.", "warning")
    return _back_to_job(job)


# --- event log ----------------------------------------------------------------------------

EVENT_WORDS = {
    "job.created": "Job created",
    "job.status": "Job is now {to}",
    "job.cancel": "Cancel requested",
    "job.republished": "Published again",
    "job.paused": "Paused",
    "job.resumed": "Resumed",
    "job.updated": "Scheduling changed",
    "job.window": "Taken back out of the broker",
    "job.waiting": "Waiting",
    "item.running": "Started",
    "item.succeeded": "Succeeded",
    "item.failed": "Failed",
    "item.cancelled": "Cancelled",
    "item.retry": "Queued for another attempt",
    "item.pending": "Waiting to be queued",
    "item.queued": "Queued",
}


def event_words(kind: str, to_status: str | None) -> str:
    return EVENT_WORDS.get(kind, kind).format(to=to_status or "?")


@bp.get("/jobs/<job_id>/events")
def job_events(job_id: str) -> str:
    job = _job_or_404(job_id)
    try:
        after = max(0, int(request.args.get("after") or 0))
    except ValueError:
        after = 0
    events = list(
        db.session.scalars(
            select(Event)
            .where(Event.job_id == job.id, Event.id > after)
            .order_by(Event.id)
            .limit(EVENTS_PAGE_SIZE + 1)
        )
    )
    more = len(events) > EVENTS_PAGE_SIZE
    events = events[:EVENTS_PAGE_SIZE]
    item_ids = {e.item_id for e in events if e.item_id}
    index = (
        dict(db.session.execute(select(Item.id, Item.idx).where(Item.id.in_(item_ids))).all())
        if item_ids
        else {}
    )
    return render_template(
        "events.html",
        job=job,
        events=events,
        index=index,
        words=event_words,
        after=after,
        next_after=events[-1].id if more and events else None,
        last_id=events[-1].id if events else after,
        live=not more,
        event_words=EVENT_WORDS,
    )
