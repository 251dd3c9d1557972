"""New job, the job list, one job with its items, its event log, and the job actions."""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass
from typing import Any

from flask import Response, abort, flash, jsonify, redirect, render_template, request, url_for
from sqlalchemy import func, select

from app.db import db
from app.errors import InvalidInput
from app.images import clean_filename
from app.models import ITEM_STATUSES, JOB_STATUSES, PRIORITIES, Event, Item, Job, WebhookDelivery
from app.provider_registry import registry, validate
from app.serializers import job_json
from app.services import estimates, intake, scheduler, webhook_delivery
from app.services import jobs as job_service
from web import paging
from web.auth import may_change_job, session_user
from web.views import bp, form_list, form_text

JOBS_PAGE_SIZE = 25
ITEMS_PAGE_SIZE = 100
EVENTS_PAGE_SIZE = 200
# Webhook deliveries shown on a job page (the latest); the API lists them all.
WEBHOOK_LOG_ROWS = 50
# A folder's images are counted (and matched to a prompts file) up to this many; past it the page
# says "more than", so opening the page never lists a whole bucket.
FOLDER_COUNT_CAP = 10_000


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
        raise InvalidInput(field, f"{name} must be one of {', '.join(str(c) for c in spec['choices'])}")
    if kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise InvalidInput(field, f"{name} must be a whole number") from None
    if kind == "float":
        try:
            return float(raw)
        except ValueError:
            raise InvalidInput(field, f"{name} must be a number") from None
    if kind == "list[str]":
        return form_list(raw)
    return raw


def _shown_name(key: str, names: dict[str, str]) -> str:
    return names.get(key) or key.rsplit("/", 1)[-1]


def _item_entries(raw: str, keys: list[str]) -> list[Any]:
    """The selected keys as `inputs` entries, with what the page's prompts table gives each image
    (JSON: a list of {key, prompt?, prompts?, params?}); an image it gives nothing stays a plain key."""
    if not raw.strip():
        return keys
    try:
        rows = json.loads(raw)
    except ValueError:
        rows = None
    if not isinstance(rows, list) or not all(
        isinstance(r, dict) and isinstance(r.get("key"), str) for r in rows
    ):
        raise InvalidInput(
            "item_prompts",
            "the per-image prompts sent with the form are not readable; choose the prompts file again",
        )
    own: dict[str, dict[str, Any]] = {}
    for row in rows:
        # Empty values say nothing: that image uses the job's prompt.
        entry = {f: row[f] for f in ("prompt", "prompts", "params") if row.get(f) not in (None, "", [], {})}
        if entry:
            own[row["key"]] = entry
    return [{"key": k, **own[k]} if k in own else k for k in keys]


def _prompts_file_key(raw: str | None) -> str | None:
    """The prompts file the page stored for a folder job; only one of this user's own."""
    raw = (raw or "").strip()
    if not raw:
        return None
    user = session_user()
    if user is None or not raw.startswith(f"{intake.PROMPT_FILES_PREFIX}{user.id}/"):
        raise InvalidInput("prompts_file", "choose the prompts file again")
    return raw


def _submit(form: Any, options: dict[str, Engine]) -> Job:
    choice = form.get("engine") or ""
    engine = options.get(choice)
    if engine is None:
        raise InvalidInput("engine", "choose what to run the images with")
    provider, model = engine.provider, engine.model
    params: dict[str, Any] = {}
    for spec in model["params"]:
        value = _param_value(spec, form.get(f"p:{engine.value}:{spec['name']}"))
        if value is not None:
            params[spec["name"]] = value
    prompt = form.get("prompt") if provider["prompt_field"] == "prompt" else None
    prompts = form_list(form.get("prompts") or "") if provider["prompt_field"] == "prompts" else None
    # A folder replaces the selected images; the prompts table then travels as a stored file.
    prefix = form_text("inputs_prefix")
    inputs = None if prefix else _item_entries(form.get("item_prompts") or "", form.getlist("inputs"))
    sub = job_service.Submission(
        provider=provider["name"],
        model=model["name"],
        inputs=inputs,
        inputs_prefix=prefix or None,
        prompts_file=_prompts_file_key(form.get("prompts_file")) if prefix else None,
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
        except InvalidInput as exc:
            db.session.rollback()
            field, message = _error_field(exc, form)
            errors[field] = message
        else:
            db.session.refresh(job)
            images = f"{job.total} image{'s' if job.total != 1 else ''}"
            if job.waiting_reason:
                flash(f"Job saved ({images}), but items wait: {job.waiting_reason}.", "warning job-start")
            elif getattr(job, "broker_unreachable", False):
                flash(
                    "The job is saved, but the broker is unreachable right now: its items will be "
                    "queued as soon as it is back.",
                    "warning",
                )
            elif job.routed_from:
                flash(
                    f"Job started: {images}, sent to {job.provider} instead of {job.routed_from}.",
                    "success job-start",
                )
            else:
                # "job-start": the job page changes this banner to say so once the job finished.
                flash(f"Job started: {images}.", "success job-start")
            return redirect(url_for("admin.job_page", job_id=job.id, created=1))
    prefix = (form.get("inputs_prefix") or request.args.get("prefix") or "").strip()
    default = next(iter(options.values())).value if options else ""
    preferred = [e.value for e in options.values() if e.provider["name"] != "echo"]
    selected = form.get("engine") or (preferred[0] if preferred else default)
    body = render_template(
        "job_new.html",
        engines=list(options.values()),
        selected=selected,
        form=form,
        inputs=[] if prefix else form.getlist("inputs"),
        folder=_folder(prefix) if prefix else None,
        folder_cap=FOLDER_COUNT_CAP,
        errors=errors,
        params_error=any(k.startswith("params.") for k in errors),
        priorities=list(PRIORITIES),
        idempotency_key=form.get("idempotency_key") or uuid.uuid4().hex,
        engines_data={
            e.value: {
                "provider": e.provider["name"],
                "prompt_field": e.provider["prompt_field"],
                "cost_per_item_usd": e.model["cost_per_item_usd"],
                "constraints": e.model["constraints"],
                "simulated": estimates.is_simulated(e.provider["name"]),
            }
            for e in options.values()
        },
        measured={e.value: _measured_words(e) for e in options.values()},
    )
    return (body, 400) if errors else body


def seconds_short(value: float) -> str:
    """Seconds in words for estimates, to a tenth below 10 s (the demo models run in under one)."""
    if value < 10:
        return f"{value:.1f} s"
    if value < 90:
        return f"{value:.0f} s"
    if value < 5400:
        return f"{value / 60:.0f} min"
    return f"{value / 3600:.1f} h"


def _measured_words(engine: Engine) -> str:
    """An engine card's time per item: the median of its recent runs at its default parameters."""
    measured = estimates.history(engine.provider["name"], engine.model["name"])
    if measured is None:
        return "time: no measurements yet"
    defaults = {p["name"]: p.get("default") for p in engine.model["params"] if p.get("default") is not None}
    per_item = measured.seconds(estimates.work_of(engine.provider["name"], defaults))
    runs = f"{measured.samples} run{'s' if measured.samples != 1 else ''}"
    return f"about {seconds_short(per_item)} per item (measured, {runs}{', simulated' if measured.simulated else ''})"


def queue_lanes(queue: str) -> int | None:
    """Items of `queue` that can run at once: the lanes (devices) of its online workers, at least
    one per worker; None when the broker cannot be asked."""
    from app.services.queues import lanes_by_worker, workers_on

    online = workers_on(queue)
    if online is None:
        return None
    lanes = lanes_by_worker()
    found = 0
    for entries in lanes.values():
        found += sum(1 for e in entries if queue in (e.get("queues") or []))  # type: ignore[operator]
    return max(found, online)


def estimate_words(
    measured: estimates.Measured | None, work: float, count: int, lanes: int | None, queue: str
) -> dict[str, Any]:
    """The New job page's time estimate: figures and the sentence it shows."""
    images = f"{count} image{'s' if count != 1 else ''}"
    if measured is None:
        return {
            "samples": 0,
            "text": f"Time: no measurements yet for this model, so no estimate for {images}.",
        }
    per_item = measured.seconds(work)
    low, high = measured.seconds_range(work)
    total = estimates.wall_seconds(per_item, count, lanes)
    runs = f"from {measured.samples} recent run{'s' if measured.samples != 1 else ''}"
    spread = f"{seconds_short(low)}–{seconds_short(high)}"
    if not lanes:
        where = f"no worker is online for queue {queue} now; once one is"
    else:
        where = f"on {lanes} worker lane{'s' if lanes != 1 else ''}"
    text = (
        f"Time: about {seconds_short(total)} for {images} {where} "
        f"({seconds_short(per_item)} each, most runs {spread}; {runs})"
    )
    if measured.simulated:
        text += " (simulated)"
    return {
        "samples": measured.samples,
        "per_item_s": round(per_item, 3),
        "per_item_low_s": round(low, 3),
        "per_item_high_s": round(high, 3),
        "total_s": round(total, 3),
        "lanes": lanes,
        "work": work,
        "cost_median_usd": measured.cost_median,
        "simulated": measured.simulated,
        "text": text + ".",
    }


@bp.get("/jobs/new/estimate")
def new_job_estimate() -> Response | tuple[Response, int]:
    """Time for `count` images with the New job form's engine and parameters (the form's field
    names), from the recent runs of that provider and model (app/services/estimates.py)."""
    options = {e.value: e for e in engines()}
    engine = options.get(request.args.get("engine") or "")
    if engine is None:
        return jsonify({"error": {"field": "engine", "message": "choose what to run the images with"}}), 400
    try:
        count = max(0, int(request.args.get("count") or 0))
    except ValueError:
        count = 0
    provider = registry()[engine.provider["name"]]
    try:
        params: dict[str, Any] = {}
        for spec in engine.model["params"]:
            value = _param_value(spec, request.args.get(f"p:{engine.value}:{spec['name']}"))
            if value is not None:
                params[spec["name"]] = value
        checked = validate(provider, engine.model["name"], None, ["estimate"], params)
    except InvalidInput as exc:
        return jsonify({"samples": 0, "text": f"Time: no estimate until {exc.message}."})
    queue = provider.queue_for(checked)
    measured = estimates.history(provider.name, engine.model["name"])
    # Asking the workers takes a broadcast: only when there is a figure to divide.
    lanes = queue_lanes(queue) if measured is not None else None
    found = estimate_words(measured, estimates.work_of(provider.name, checked.params), count, lanes, queue)
    return jsonify({"engine": engine.value, "count": count, "queue": queue, **found})


def _error_field(exc: InvalidInput, form: Any) -> tuple[str, str]:
    """Where on the page an error from create_job shows, and what it says there."""
    known = ("engine", "inputs", "prompt", "prompts", "priority", "max_concurrency", "prompts_file")
    if exc.field in ("provider", "model"):
        return "engine", exc.message
    if exc.field.startswith("params.") or exc.field in known:
        return exc.field, exc.message
    if exc.field == "inputs_prefix":
        return "inputs", exc.message
    if exc.field == "item_prompts" or exc.field.startswith("inputs["):
        # inputs[3].prompt: name the image, which is what the prompts table shows.
        index = exc.field[len("inputs[") :].split("]", 1)[0]
        keys = form.getlist("inputs")
        if index.isdigit() and int(index) < len(keys):
            key = keys[int(index)]
            return "item_prompts", f"{_shown_name(key, intake.uploaded_names([key]))}: {exc.message}"
        return "item_prompts", exc.message
    return "form", exc.message


def _folder(prefix: str) -> dict[str, Any]:
    """What the page says about a folder: its images counted from the storage listing (capped)."""
    try:
        prefix = intake.check_prefix(prefix)
    except InvalidInput as exc:
        return {"prefix": prefix, "count": 0, "more": False, "error": exc.message}
    count = 0
    for keys in intake.keys_under(prefix):
        count += len(keys)
        if count > FOLDER_COUNT_CAP:
            return {"prefix": prefix, "count": FOLDER_COUNT_CAP, "more": True, "error": None}
    error = None if count else f"no images (PNG, JPEG or WEBP) under {prefix}"
    return {"prefix": prefix, "count": count, "more": False, "error": error}


def _prompts_error(message: str, status: int = 400) -> tuple[Response, int]:
    return jsonify({"error": {"field": "prompts_file", "message": message}}), status


def _matched_row(found: intake.PromptsFile, key: str, filename: str | None) -> dict[str, Any] | None:
    """The file's row for an image, its shape checked as the job checks it (InvalidInput names the
    row); seed and negative_prompt come back as parameters."""
    match = found.lookup(key, filename)
    if match is None:
        return None
    entry = found.apply(intake.Entry(key=key), filename)
    return {"name": match[0], "prompt": entry.prompt, "prompts": entry.prompts, "params": entry.params or {}}


def _unmatched_row(name: str, row: dict[str, Any]) -> dict[str, Any]:
    """A row that matches no image, for display only."""
    prompt, prompts = row.get("prompt"), row.get("prompts")
    return {
        "name": name,
        "prompt": prompt if isinstance(prompt, str) else None,
        "prompts": [str(p) for p in prompts] if isinstance(prompts, list) else None,
    }


@bp.post("/jobs/new/prompts")
def new_job_prompts() -> Response | tuple[Response, int]:
    """Read a prompts file chosen on the New job page and match its rows to the page's images (in
    the order the job will: key, uploaded name, the key's last part). For a folder the file is kept
    in storage too: the job reads it from there (prompts_file)."""
    f = request.files.get("file")
    if f is None:
        return _prompts_error("choose a CSV or JSONL file")
    data = f.read(intake.MAX_PROMPTS_FILE_BYTES + 1)
    if len(data) > intake.MAX_PROMPTS_FILE_BYTES:
        return _prompts_error(f"the file is over {intake.MAX_PROMPTS_FILE_BYTES // 2**20} MiB", 413)
    name = clean_filename(f.filename) or "prompts.csv"
    try:
        found = intake.PromptsFile(intake.parse_prompts(data, name), set())
        prefix = form_text("inputs_prefix")
        if prefix:
            prefix = intake.check_prefix(prefix)
    except InvalidInput as exc:
        return _prompts_error(exc.message)
    try:
        if not prefix:
            keys = request.form.getlist("inputs")
            names = intake.uploaded_names(keys)
            images = []
            for key in keys:
                row = _matched_row(found, key, names.get(key))
                images.append(
                    {
                        **(row or {"prompt": None, "prompts": None, "params": {}}),
                        "key": key,
                        "name": _shown_name(key, names),
                        "match": row["name"] if row else None,
                    }
                )
            unmatched = [_unmatched_row(n, found.rows[n]) for n in found.unmatched()]
            return jsonify({"file": name, "images": images, "unmatched": unmatched})

        keys = []
        for page in intake.keys_under(prefix):
            keys.extend(page)
            if len(keys) > FOLDER_COUNT_CAP:
                break
        more = len(keys) > FOLDER_COUNT_CAP
        keys = keys[:FOLDER_COUNT_CAP]
        names = intake.uploaded_names(keys)
        matched = []
        for key in keys:
            row = _matched_row(found, key, names.get(key))
            if row:
                matched.append({**row, "key": key})
    except InvalidInput as exc:
        return _prompts_error(exc.message)
    user = session_user()
    key = intake.store_prompts_file(data, name, user.id if user else None)
    return jsonify(
        {
            "file": name,
            "prompts_file": key,
            "folder": {
                "prefix": prefix,
                "images": len(keys),
                "more": more,
                "without": len(keys) - len(matched),
            },
            "matched": matched,
            "unmatched": [_unmatched_row(n, found.rows[n]) for n in found.unmatched()],
        }
    )


# --- job list -----------------------------------------------------------------------------


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
        position = paging.decode_cursor(cursor)
        if position is None:
            abort(400, "that page link is not valid; start again from the first page")
        query = paging.after(query, position)
    rows = list(db.session.scalars(query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)))
    next_cursor = paging.encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    rows = rows[:limit]
    return render_template(
        "jobs.html",
        jobs=rows,
        remaining=estimates.remaining_for(rows),
        notes=waiting_notes(rows),
        status=status,
        provider=provider,
        statuses=JOB_STATUSES,
        providers=sorted(registry()),
        next_cursor=next_cursor,
        cursor=cursor,
        limit=limit if request.args.get("limit") else None,
    )


def waiting_notes(rows: list[Job]) -> dict[str, str]:
    """Why an unfinished job's items wait, in words: its own waiting_reason (the spending cap), the
    job paused, or a paused queue that holds its pending items."""
    unfinished = [j for j in rows if j.status in ("queued", "running", "paused")]
    if not unfinished:
        return {}
    paused = scheduler.paused_queues()
    held: dict[str, list[str]] = {}
    if paused:
        for job_id, queue in db.session.execute(
            select(Item.job_id, Item.queue)
            .where(Item.job_id.in_([j.id for j in unfinished]), Item.status == "pending")
            .distinct()
        ):
            if queue in paused:
                held.setdefault(job_id, []).append(queue)
    notes: dict[str, str] = {}
    for job in unfinished:
        said = []
        if job.status == "paused":
            said.append("paused: no new item starts until it is resumed")
        if job.waiting_reason:
            said.append(f"waiting: {job.waiting_reason}")
        for queue in sorted(held.get(job.id, [])):
            said.append(f"waiting: queue {queue} is paused for maintenance")
        if said:
            notes[job.id] = "; ".join(said)
    return notes


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
    unfinished = job.status in ("queued", "running", "paused")
    note = waiting_notes([job]).get(job.id) if unfinished else None
    if note and job.waiting_reason:
        # The spending cap shows live in its own banner (#job-waiting).
        note = "; ".join(p for p in note.split("; ") if not p.startswith("waiting: " + job.waiting_reason))
    cost = db.session.scalar(
        select(func.sum(Item.cost_usd)).where(Item.job_id == job.id, Item.cost_usd.is_not(None))
    )
    return render_template(
        "job.html",
        remaining=estimates.job_remaining(job, estimates.history(job.provider, job.model))
        if unfinished
        else None,
        note=note or None,
        cost=float(cost) if cost is not None else None,
        simulated=estimates.is_simulated(job.provider),
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
    except InvalidInput as exc:
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
        raise InvalidInput(
            "max_concurrency", "max at once must be a whole number from 1, or empty for no cap"
        )
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
