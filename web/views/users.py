"""The admins' users page: who has an account, their role, deactivation, and every API token."""

from __future__ import annotations

import secrets

from flask import Response, abort, flash, redirect, render_template, request, url_for

from app.db import db
from app.models import User
from app.services.users import ROLES, active_tokens, all_users, create_user, get_user, set_active, set_role
from web.auth import admin_required, session_user
from web.views import bp, form_text


def _users_page(created: tuple[str, str] | None = None, error: str | None = None) -> str | tuple[str, int]:
    body = render_template(
        "users.html",
        users=all_users(),
        tokens=active_tokens(),
        roles=ROLES,
        me=session_user(),
        created=created,
        error=error,
        form=request.form,
    )
    return (body, 400) if error else body


@bp.get("/users")
@admin_required
def users() -> str | tuple[str, int]:
    return _users_page()


@bp.post("/users")
@admin_required
def add_user() -> str | tuple[str, int]:
    """A new account with a generated password, shown once on the page that answers."""
    email = form_text("email").lower()
    role = request.form.get("role") or "member"
    if role not in ROLES:
        return _users_page(error=f"Choose a role: {' or '.join(ROLES)}.")
    if get_user(email) is not None:
        return _users_page(error=f"{email} already has an account; change it in the list below.")
    password = secrets.token_urlsafe(12)
    try:
        user = create_user(email, password, role)
    except ValueError:
        db.session.rollback()
        return _users_page(error="That is not an email address.")
    return _users_page(created=(user.email, password))


def _other_user(user_id: int) -> User:
    """The user to change: never the admin doing it, so at least one active admin always remains."""
    user = db.session.get(User, user_id)
    if user is None:
        abort(404, f"there is no user {user_id}")
    me = session_user()
    if me is not None and user.id == me.id:
        abort(403, "you cannot change your own role or deactivate yourself; ask another admin")
    return user


@bp.post("/users/<int:user_id>/role")
@admin_required
def change_role(user_id: int) -> Response:
    user = _other_user(user_id)
    role = request.form.get("role") or ""
    if role not in ROLES:
        abort(400, f"choose a role: {' or '.join(ROLES)}")
    if set_role(user, role):
        flash(f"{user.email} is now {'an admin' if role == 'admin' else 'a member'}.", "success")
    else:
        flash(f"{user.email} already was {'an admin' if role == 'admin' else 'a member'}.", "info")
    return redirect(url_for("admin.users"))


@bp.post("/users/<int:user_id>/active")
@admin_required
def change_active(user_id: int) -> Response:
    user = _other_user(user_id)
    active = request.form.get("active") == "1"
    if not set_active(user, active):
        flash(f"{user.email} already was {'active' if active else 'deactivated'}.", "info")
    elif active:
        flash(f"{user.email} can sign in again; their unrevoked tokens work again.", "success")
    else:
        flash(
            f"{user.email} is deactivated: their session and API tokens are refused from now on.", "success"
        )
    return redirect(url_for("admin.users"))
