"""The admins' worker tokens page: what GPU and API hosts show for storage grants; revoke to stop a host."""

from __future__ import annotations

from flask import Response, flash, redirect, render_template, request, url_for

from app.db import db
from app.services.worker_tokens import create_worker_token, revoke_worker_token, worker_tokens
from web.auth import admin_required, session_user
from web.views import bp


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
    name = (request.form.get("name") or "").strip()
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
