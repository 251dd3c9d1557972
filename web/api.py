"""The JSON API under /api/v1 (bearer tokens). Its bodies are the models of app/contract/api.py;
the OpenAPI document (web/openapi.py) is generated from them."""

from __future__ import annotations

from typing import Any, TypeVar

from flask import Blueprint, Response, g, jsonify, request, stream_with_context
from sqlalchemy import func, select
from sqlalchemy.orm import joinedload, selectinload

from app import storage as storage_mod
from app.config import QUEUES, settings
from app.contract import api as contract
from app.db import db
from app.errors import InvalidInput
from app.images import ImageRejected, inspect_image
from app.models import FINISHED, ITEM_STATUSES, Asset, Item, Job, WebhookDelivery
from app.provider_registry import registry
from app.serializers import ITEM_COLUMNS, delivery_json, item_json, job_json
from app.services import jobs as job_service
from app.services import scheduler, uploads, webhook_delivery, webhooks
from app.services.queues import (
    lanes_by_worker,
    online_workers,
    queue_depths,
    reports_waiting,
    workers_by_queue,
)
from app.storage_factory import get_storage
from web import live, paging, zipstream
from web.auth import admin_required, api_auth_required, may_change_job, refuse_writes_with_read_only_token
from web.errors import ApiError, not_found

bp = Blueprint("api", __name__, url_prefix="/api/v1")
# Items per job read unless `items_limit` says otherwise (up to 10,000); `items_next_offset` pages.
ITEMS_PAGE = 100


@bp.before_request
@api_auth_required
def _require_auth() -> None:
    # Who may do what: docs/reliability.md, "Access model"; every route's rule is in tests/security/test_roles.py.
    refuse_writes_with_read_only_token()


@bp.before_request
def _refuse_undocumented_query() -> None:
    """Query parameters as the document describes them: a name it does not list, a single-valued one
    given twice or empty, or a value outside its enum is refused rather than silently ignored."""
    from web.openapi import query_parameters

    if request.url_rule is None:
        return
    described = query_parameters(request.url_rule.rule, request.method)
    if described is None:
        return
    for name in request.args:
        schema = described.get(name)
        if schema is None:
            known = ", ".join(sorted(described)) or "none"
            raise InvalidInput(name, f"unknown query parameter {name!r}; this address takes: {known}")
        values = request.args.getlist(name)
        if schema.get("type") == "array":
            continue
        if len(values) > 1:
            raise InvalidInput(name, f"give {name} once")
        if values[0] == "" and schema.get("type") == "integer":
            raise InvalidInput(name, f"{name} must be an integer")
        if "enum" in schema and values[0] not in schema["enum"]:
            raise InvalidInput(name, f"{name} must be one of {schema['enum']}")


def _json_body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    if data is None:
        raise ApiError(
            400, "invalid_json", "the request body must be a JSON object (Content-Type: application/json)"
        )
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "the request body must be a JSON object")
    return data


Body = TypeVar("Body", bound=contract.Request)


def parse_body(model: type[Body]) -> Body:
    """The JSON request body as `model`; a body it does not describe is refused naming the field."""
    return contract.parse(model, _json_body())


def _int_arg(name: str, default: int, lo: int, hi: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_parameter", f"{name} must be an integer", name) from None
    if not lo <= value <= hi:
        raise ApiError(400, "invalid_parameter", f"{name} must be between {lo} and {hi}", name)
    return value


def _get_job(job_id: str) -> Job:
    job = db.session.get(Job, job_id, options=[joinedload(Job.creator)])
    if job is None:
        raise not_found("job", job_id)
    return job


def _job_to_change(job: Job) -> Job:
    """The job, if the caller may change it: their own, or any job for an admin."""
    if not may_change_job(g.user, job):
        owner = job.creator.email if job.creator else "nobody"
        raise ApiError(403, "forbidden", f"this job belongs to {owner}; only they or an admin can change it")
    return job


# --- uploads and assets -------------------------------------------------------------------


def asset_json(
    key: str, asset: Asset | None, size: int | None = None, content_type: str | None = None
) -> dict:
    return {
        "key": key,
        "size": asset.size if asset else size,
        "content_type": asset.content_type if asset else content_type,
        "width": asset.width if asset else None,
        "height": asset.height if asset else None,
        "sha256": asset.sha256 if asset else None,
        "filename": asset.filename if asset else key.rsplit("/", 1)[-1],
    }


@bp.post("/uploads")
def upload() -> tuple[Response, int]:
    files = request.files.getlist("files")
    if not files:
        raise ApiError(400, "missing_files", "send one or more images as multipart field 'files'", "files")
    s = settings()
    checked = []
    for f in files:
        data = f.read(s.max_upload_bytes + 1)
        try:
            info = inspect_image(data, f.filename, s.max_upload_bytes, s.max_image_pixels)
        except ImageRejected as exc:
            status = 413 if len(data) > s.max_upload_bytes else 400
            code = "too_large" if status == 413 else "invalid_image"
            raise ApiError(status, code, exc.message, "files") from None
        checked.append(uploads.Upload(f.filename, data, info))
    assets = uploads.store_uploads(checked, g.user.id)
    return jsonify({"assets": [asset_json(a.key, a) for a in assets]}), 201


@bp.get("/assets")
def list_assets() -> Response:
    prefix = request.args.get("prefix", "inputs/")
    try:
        storage_mod.validate_prefix(prefix)
    except ValueError as exc:
        raise ApiError(400, "invalid_parameter", f"invalid prefix: {exc}", "prefix") from None
    limit = _int_arg("limit", 100, 1, 1000)
    try:
        objects, next_cursor = get_storage().list(
            prefix=prefix, cursor=request.args.get("cursor") or None, limit=limit
        )
    except storage_mod.InvalidCursor:
        raise ApiError(400, "invalid_parameter", "cursor is not valid", "cursor") from None
    keys = [o.key for o in objects]
    known = {a.key: a for a in db.session.scalars(select(Asset).where(Asset.key.in_(keys)))} if keys else {}
    return jsonify(
        {
            "assets": [asset_json(o.key, known.get(o.key), o.size, o.content_type) for o in objects],
            "next_cursor": next_cursor,
        }
    )


# --- jobs ---------------------------------------------------------------------------------


@bp.post("/jobs")
def create_job() -> tuple[Response, int]:
    # Only the fields given, as given: the idempotency hash is of what the client sent.
    given = parse_body(contract.NewJob).model_dump(exclude_unset=True)
    sub = job_service.Submission(
        **{"provider": settings().default_provider, "model": None, "inputs": None, **given}
    )
    job, created = job_service.create_job(sub, g.user.id)
    wait = live.prefer_wait()
    if wait:  # answer when the job finishes or after `wait` s, holding no database connection meanwhile
        job_id = job.id
        live.wait_for_job(job_id, wait)
        job = _get_job(job_id)
    db.session.refresh(job)
    return live.applied(jsonify(job_json(job)), wait), 201 if created else 200


@bp.get("/jobs")
def list_jobs() -> Response:
    limit = _int_arg("limit", 50, 1, 500)
    query = select(Job)
    status = request.args.get("status")
    if status:
        query = query.where(Job.status == status)
    provider = request.args.get("provider")
    if provider:
        query = query.where(Job.provider == provider)
    cursor = request.args.get("cursor")
    if cursor:
        position = paging.decode_cursor(cursor)
        if position is None:
            raise ApiError(400, "invalid_parameter", "cursor is not valid", "cursor")
        query = paging.after(query, position)
    query = query.options(selectinload(Job.creator))  # created_by without a query per job
    rows = list(db.session.scalars(query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)))
    next_cursor = paging.encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return jsonify({"jobs": [job_json(j) for j in rows[:limit]], "next_cursor": next_cursor})


@bp.get("/jobs/<job_id>")
def get_job(job_id: str) -> Response:
    limit = _int_arg("items_limit", ITEMS_PAGE, 0, 10000)
    offset = _int_arg("items_offset", 0, 0, 10_000_000)
    wait = live.prefer_wait()
    if wait:  # answer when the job finishes or after `wait` s, holding no database connection meanwhile
        live.wait_for_job(job_id, wait)
    job = _get_job(job_id)
    query = select(*ITEM_COLUMNS).where(Item.job_id == job.id)
    item_status = request.args.get("item_status")
    if item_status:
        query = query.where(Item.status == item_status)
    items = list(db.session.execute(query.order_by(Item.idx).offset(offset).limit(limit)))
    data = job_json(job, items)
    data["items_offset"] = offset
    data["items_next_offset"] = offset + limit if offset + limit < job.total and len(items) == limit else None
    return live.applied(jsonify(data), wait)


@bp.get("/jobs/<job_id>/stream")
def job_stream(job_id: str) -> Response:
    """Server-Sent Events: job snapshots, changed items and live progress until the job finishes."""
    job = _get_job(job_id)
    offset = _int_arg("items_offset", 0, 0, 10_000_000)
    limit = _int_arg("items_limit", ITEMS_PAGE, 0, 10000)
    return live.stream_response(job.id, offset, limit)


@bp.get("/stream")
def changes_stream() -> Response:
    """Server-Sent Events: `changed` with the ids of jobs whose counts or status changed."""
    return live.changes_response()


@bp.get("/jobs/<job_id>/events")
def job_events(job_id: str) -> Response:
    from app.models import Event

    job = _get_job(job_id)
    after = _int_arg("after", 0, 0, 2**62)
    limit = _int_arg("limit", 200, 1, 1000)
    rows = db.session.scalars(
        select(Event).where(Event.job_id == job.id, Event.id > after).order_by(Event.id).limit(limit)
    )
    return jsonify(
        {
            "events": [
                {
                    "id": e.id,
                    "at": e.at.isoformat() if e.at else None,
                    "kind": e.kind,
                    "item_id": e.item_id,
                    "from_status": e.from_status,
                    "to_status": e.to_status,
                    "attempt": e.attempt,
                    "worker": e.worker,
                    "detail": e.detail,
                }
                for e in rows
            ]
        }
    )


@bp.post("/jobs/<job_id>/cancel")
def cancel_job(job_id: str) -> Response:
    job = _job_to_change(_get_job(job_id))
    cancelled = job_service.cancel_job(job)
    db.session.refresh(job)
    return jsonify({"cancelled": cancelled, "job": job_json(job)})


@bp.post("/jobs/<job_id>/pause")
def pause_job(job_id: str) -> Response:
    job = _job_to_change(_get_job(job_id))
    if job.status in FINISHED:
        raise ApiError(409, "conflict", f"job is {job.status}; only unfinished jobs can be paused")
    paused = scheduler.pause_job(job)
    db.session.refresh(job)
    return jsonify({"paused": paused, "job": job_json(job)})


@bp.post("/jobs/<job_id>/resume")
def resume_job(job_id: str) -> Response:
    job = _job_to_change(_get_job(job_id))
    resumed = scheduler.resume_job(job)
    db.session.refresh(job)
    return jsonify({"resumed": resumed, "job": job_json(job)})


@bp.patch("/jobs/<job_id>")
def update_job(job_id: str) -> Response:
    job = _job_to_change(_get_job(job_id))
    try:
        changes = parse_body(contract.JobChange).model_dump(exclude_unset=True)
    except InvalidInput as exc:
        if exc.message.startswith("unknown field"):
            raise InvalidInput(
                exc.field, f"{exc.field} cannot be changed; priority and max_concurrency can"
            ) from None
        raise
    if not changes:
        raise InvalidInput("priority", "give priority and/or max_concurrency to change")
    scheduler.update_job(job, changes)
    db.session.refresh(job)
    return jsonify(job_json(job))


@bp.post("/jobs/<job_id>/retry")
def retry_job(job_id: str) -> Response:
    job = _job_to_change(_get_job(job_id))
    retried = job_service.retry_failed(job)
    db.session.refresh(job)
    return jsonify({"retried": retried, "job": job_json(job)})


@bp.post("/items/<item_id>/retry")
def retry_item(item_id: str) -> Response:
    item = db.session.get(Item, item_id)
    if item is None:
        raise not_found("item", item_id)
    _job_to_change(item.job)
    if item.status not in ("failed", "cancelled"):
        raise ApiError(
            409, "conflict", f"item is {item.status}; only failed or cancelled items can be retried"
        )
    if not job_service.retry_item(item, "item retry requested"):
        raise ApiError(409, "conflict", "the item changed state meanwhile; reload and try again")
    db.session.refresh(item)
    return jsonify(item_json(item))


@bp.get("/items/<item_id>")
def get_item(item_id: str) -> Response:
    item = db.session.get(Item, item_id)
    if item is None:
        raise not_found("item", item_id)
    return jsonify(item_json(item))


@bp.get("/jobs/<job_id>/download")
def download_job(job_id: str) -> Response:
    """The job's results as a zip, each named after its input, with manifest.csv (a row per item);
    `items=<id>,<id>` (or `items` repeated) limits both to those items."""
    job = _get_job(job_id)
    item_ids = None
    name = f"job-{job.id[:8]}.zip"
    if "items" in request.args:
        try:
            item_ids = zipstream.selected_ids(job.id, request.args.getlist("items"))
        except zipstream.SelectionError as exc:
            raise ApiError(400, "invalid_parameter", str(exc), "items") from None
        name = f"job-{job.id[:8]}-{len(item_ids)}-item{'s' if len(item_ids) != 1 else ''}.zip"
    prompt, prompts = job.prompt, list(job.prompts or [])
    db.session.commit()
    # Rows are read a batch at a time while the zip streams (web/zipstream.py).
    rows = zipstream.job_rows(job.id, item_ids)
    body = zipstream.zip_job(get_storage(), rows, prompt, prompts)
    response = Response(stream_with_context(body), mimetype="application/zip")
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


# --- webhooks -----------------------------------------------------------------------------


@bp.get("/jobs/<job_id>/webhooks")
def job_webhooks(job_id: str) -> Response:
    """The job's webhook deliveries, oldest first (`after` pages by id)."""
    job = _get_job(job_id)
    after = _int_arg("after", 0, 0, 2**62)
    limit = _int_arg("limit", 100, 1, 1000)
    rows = db.session.scalars(
        select(WebhookDelivery)
        .where(WebhookDelivery.job_id == job.id, WebhookDelivery.id > after)
        .order_by(WebhookDelivery.id)
        .limit(limit)
    )
    return jsonify({"webhook": job.webhook, "deliveries": [delivery_json(d) for d in rows]})


@bp.post("/jobs/<job_id>/webhooks/<int:delivery_id>/redeliver")
def redeliver_webhook(job_id: str, delivery_id: int) -> Response:
    job = _job_to_change(_get_job(job_id))
    delivery = db.session.get(WebhookDelivery, delivery_id)
    if delivery is None or delivery.job_id != job.id:
        raise not_found("webhook delivery", str(delivery_id))
    webhook_delivery.redeliver(delivery)
    db.session.commit()
    return jsonify(delivery_json(delivery))


@bp.get("/account")
def account() -> Response:
    """Who the token belongs to, and the secret that signs their webhook deliveries."""
    secret = webhooks.secret_of(g.user)
    db.session.commit()
    return jsonify(_account_json(secret))


@bp.post("/account/webhook-secret")
def rotate_webhook_secret() -> Response:
    """A new signing secret; the previous one keeps signing alongside it for 24 hours."""
    secret = webhooks.rotate_secret(g.user)
    db.session.commit()
    return jsonify(_account_json(secret))


def _account_json(secret: str) -> dict[str, Any]:
    return {
        "email": g.user.email,
        "role": g.user.role,
        "is_admin": g.user.is_admin,
        # The scope of the token this request came with; a signed-in session acts with its user's role.
        "token_scope": g.get("token_scope") or "session",
        "webhook_secret": secret,
    }


# --- overview -----------------------------------------------------------------------------


@bp.get("/stats")
def stats() -> Response:
    cols = [func.coalesce(func.sum(getattr(Job, f"n_{s}")), 0) for s in ITEM_STATUSES]
    rows = db.session.execute(
        select(Job.provider, func.coalesce(func.sum(Job.total), 0), *cols).group_by(Job.provider)
    )
    out: dict[str, dict[str, int]] = {
        name: {"total": 0, **dict.fromkeys(ITEM_STATUSES, 0)} for name in registry()
    }
    for provider, total, *counts in rows:
        out[provider] = {
            "total": int(total),
            **{s: int(c) for s, c in zip(ITEM_STATUSES, counts, strict=True)},
        }
    return jsonify({"providers": out})


@bp.get("/queues")
def queues() -> Response:
    running = dict(
        db.session.execute(
            select(Item.queue, func.count()).where(Item.status == "running").group_by(Item.queue)
        ).all()
    )
    depths = queue_depths()
    workers = online_workers()
    lanes = lanes_by_worker()
    by_queue = workers_by_queue(workers, lanes)
    pending = scheduler.pending_by_queue()
    paused = scheduler.paused_queues()
    windows = scheduler.window_sizes()
    out = {}
    for q in QUEUES:
        names = by_queue[q]
        out[q] = {
            # In the broker's window now (None: broker unreachable), and waiting in Postgres.
            "waiting": depths[q],
            "pending": int(pending.get(q, 0)),
            "window": windows.get(q),
            "paused": q in paused,
            "running": int(running.get(q, 0)),
            # Workers taking items now; `workers` also lists those still loading (or broken).
            "workers_online": sum(1 for w in names if q in workers.get(w, [])),
            "workers": names,
            "devices": {w: [lane["device"] for lane in lanes.get(w, [])] for w in names},
            # Per device of each worker: state (loading / ready / broken / draining), error, current item.
            "lanes": {w: lanes.get(w, []) for w in names},
        }
    out["control"]["reports_waiting"] = reports_waiting()
    return jsonify({"queues": out, "broker_reachable": depths[QUEUES[0]] is not None})


@bp.post("/queues/<name>/pause")
@admin_required
def pause_queue(name: str) -> Response:
    return _set_queue_paused(name, True)


@bp.post("/queues/<name>/resume")
@admin_required
def resume_queue(name: str) -> Response:
    return _set_queue_paused(name, False)


def _set_queue_paused(name: str, paused: bool) -> Response:
    if name not in scheduler.ITEM_QUEUES:
        raise not_found("queue", name)
    changed = scheduler.set_queue_paused(name, paused, g.user.id)
    return jsonify({"queue": name, "paused": paused, "changed": changed})


@bp.get("/providers")
def providers() -> Response:
    return jsonify(
        {"providers": [p.describe() for p in registry().values()], "default": settings().default_provider}
    )


@bp.get("/openapi.json")
def openapi() -> Response:
    from web.openapi import spec

    return jsonify(spec())


# Routes kept in their own modules, registered on this blueprint.
import web.api_prompts  # noqa: E402, F401
import web.api_uploads  # noqa: E402, F401
