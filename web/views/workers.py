"""The admins' Workers page (every worker process: device, model, state, current item; drain one) and
worker tokens page (what GPU and API hosts show for storage grants; revoke to stop a host)."""

from __future__ import annotations

import time

from flask import Response, abort, flash, redirect, render_template, url_for

from app.config import settings
from app.db import db
from app.services.worker_tokens import create_worker_token, revoke_worker_token, worker_tokens
from app.services.workers import GONE_AFTER_S, ago, drain, lost_after_s, workers_now
from web.auth import admin_required, session_user
from web.views import bp, form_text


def _page(created: tuple[str, str] | None = None, error: str | None = None) -> str | tuple[str, int]:
    body = render_template("worker_tokens.html", tokens=worker_tokens(), created=created, error=error)
    return (body, 400) if error else body


@bp.get("/worker-tokens")
@admin_required
def worker_token_list() -> str | tuple[str, int]:
    return _page()


@bp.post("/worker-tokens")
@admin_required
def add_worker_token() -> str | tuple[str, int]:
    """A new token, shown once on the page that answers."""
    name = form_text("name")
    me = session_user()
    try:
        token = create_worker_token(name, created_by=me.id if me else None)
    except ValueError as exc:
        db.session.rollback()
        return _page(error=str(exc)[0].upper() + str(exc)[1:] + ".")
    return _page(created=(name, token))


@bp.post("/worker-tokens/<int:token_id>/revoke")
@admin_required
def revoke_worker_token_view(token_id: int) -> Response:
    if revoke_worker_token(token_id):
        flash("Worker token revoked: its hosts are refused at their next request and stop.", "success")
    else:
        flash("That worker token was already revoked.", "error")
    return redirect(url_for("admin.worker_token_list"))


# --- the Workers page: every worker process, from what each announces --------------------------


@bp.get("/workers")
@admin_required
def workers() -> str:
    listing = workers_now(time.time())
    heartbeat_s = float(settings().heartbeat_s)
    return render_template(
        "workers.html",
        listing=listing,
        ago=ago,
        heartbeat_s=heartbeat_s,
        lost_after=lost_after_s(heartbeat_s),
        gone_after=GONE_AFTER_S,
    )


@bp.post("/workers/drain")
@admin_required
def drain_worker() -> Response:
    """Drain one worker process: its running items finish, it takes no new one, then it exits."""
    node = form_text("node")
    listing = workers_now(time.time())
    if listing is None:
        flash("The broker is unreachable: no worker can be asked to drain now.", "error")
        return redirect(url_for("admin.workers"))
    if not node or node not in {p.node for p in listing.processes if not p.lost}:
        abort(404)
    try:
        answered = drain(node)
    except Exception as exc:  # noqa: BLE001 - broker trouble: said on the page
        flash(f"Could not reach {node}: {type(exc).__name__}.", "error")
        return redirect(url_for("admin.workers"))
    if answered:
        flash(f"{node} is draining: its running items finish, then it exits.", "success")
    else:
        flash(f"{node} did not answer; it may be busy starting or gone. Try again.", "error")
    return redirect(url_for("admin.workers"))
