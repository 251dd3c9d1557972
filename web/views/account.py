"""Signing in and out, and the account page. Users are made with `flask --app web create-user EMAIL`."""

from __future__ import annotations

import math

from flask import Response, flash, redirect, render_template, request, url_for

from app.db import db
from app.services import webhooks
from app.services.users import check_password, get_user
from web.auth import login_session, logout_session, safe_next, session_user
from web.ratelimit import login_limiter
from web.views import bp


def _client_address() -> str:
    return request.remote_addr or "unknown"


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | str | tuple[str, int]:
    next_target = request.values.get("next") or ""
    if request.method == "GET":
        if session_user() is not None:
            return redirect(safe_next(next_target))
        return render_template("login.html", next=next_target, email="", error=None)

    email = (request.form.get("email") or "").strip().lower()
    password = request.form.get("password") or ""
    address = _client_address()
    wait = login_limiter.retry_after(address, email)
    if wait:
        minutes = max(1, math.ceil(wait / 60))
        error = (
            f"Too many failed sign-ins for {email or 'this address'}. "
            f"Try again in {minutes} minute{'s' if minutes != 1 else ''}."
        )
        return render_template("login.html", next=next_target, email=email, error=error), 429
    user = get_user(email) if email else None
    if user is None or not check_password(user, password):
        login_limiter.failed(address, email)
        return (
            render_template("login.html", next=next_target, email=email, error="Wrong email or password."),
            401,
        )
    login_limiter.reset(address, email)
    login_session(user)
    return redirect(safe_next(next_target))


@bp.post("/logout")
def logout() -> Response:
    logout_session()
    return redirect(url_for("admin.login"))


@bp.get("/account")
def account() -> str:
    user = session_user()
    secret = webhooks.secret_of(user)
    db.session.commit()
    return render_template("account.html", user=user, secret=secret, events=webhooks.EVENTS)


@bp.post("/account/webhook-secret")
def rotate_webhook_secret() -> Response:
    webhooks.rotate_secret(session_user())
    db.session.commit()
    flash("New signing secret made. The previous one also signs deliveries for the next 24 hours.", "success")
    return redirect(url_for("admin.account"))
