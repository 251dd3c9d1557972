"""A job's item rows, rendered by the same macro as the job page (`item_row` in _macros.html).

The job page learns from the job's event stream (or its polling) which items changed, and asks
here for just those rows: one renderer for the first load and every live update."""

from __future__ import annotations

from flask import Response, abort, render_template, request, url_for
from sqlalchemy import select

from app.db import db
from app.models import Item, Job
from app.serializers import item_json, live_progress
from web.auth import may_change_job, session_user
from web.views import bp

# A page shows 100 items (web/views/jobs.py); a request asks for the ones that changed.
MAX_ROWS = 200


@bp.get("/jobs/<job_id>/rows")
def job_rows(job_id: str) -> Response:
    """`<tr>`s of the job's items named in `ids` (comma-separated), in item order; ids that are
    not this job's are left out. `back`: where the rows' Retry buttons return to (the page)."""
    job = db.session.get(Job, job_id)
    if job is None:
        abort(404, f"there is no job {job_id}")
    ids = [i for i in (request.args.get("ids") or "").split(",") if i][: MAX_ROWS + 1]
    if len(ids) > MAX_ROWS:
        abort(400, f"ask for at most {MAX_ROWS} rows at a time")
    items = (
        list(
            db.session.scalars(select(Item).where(Item.job_id == job.id, Item.id.in_(ids)).order_by(Item.idx))
        )
        if ids
        else []
    )
    progress = live_progress({i.id: i.attempt for i in items if i.status == "running"})
    back = request.args.get("back") or ""
    if not back.startswith(f"/jobs/{job.id}"):
        back = url_for("admin.job_page", job_id=job.id)
    html = render_template(
        "_item_rows.html",
        items=[item_json(i, progress, job) for i in items],
        back=back,
        can_change=may_change_job(session_user(), job),
    )
    return Response(html, mimetype="text/html")
