"""The admin pages: server-rendered, signed in with the session, live-updated by web/static/app.js."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, abort, request

from web.auth import redirect_to_login, session_user

bp = Blueprint("admin", __name__)

# Endpoints an anonymous visitor may reach; every other page and action needs a signed-in user.
PUBLIC_ENDPOINTS = frozenset({"admin.login"})
# Pages and actions open to members too; a job action also checks that the job is theirs
# (web.auth.may_change_job). Anything not listed, such as a page added later, is for admins only.
MEMBER_ENDPOINTS = frozenset(
    {
        "admin.logout",
        "admin.dashboard",
        "admin.images",
        "admin.thumbnail",
        "admin.new_job",
        "admin.new_job_prompts",
        "admin.new_job_estimate",
        "admin.jobs",
        "admin.job_page",
        "admin.job_rows",
        "admin.job_events",
        "admin.cancel_job",
        "admin.pause_job",
        "admin.resume_job",
        "admin.schedule_job",
        "admin.retry_job",
        "admin.retry_item",
        "admin.redeliver_webhook",
        "admin.account",
        "admin.rotate_webhook_secret",
        "admin.create_api_token",
        "admin.revoke_api_token",
    }
)


@bp.before_request
def _require_login() -> Any:
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    user = session_user()
    if user is None:
        return redirect_to_login()
    if not user.is_admin and request.endpoint not in MEMBER_ENDPOINTS:
        abort(403, "this page is for admins; ask an admin if you need it")
    return None


def form_text(name: str) -> str:
    """A field of the posted form as typed, without surrounding space; empty when not sent."""
    return (request.form.get(name) or "").strip()


def form_list(raw: str) -> list[str]:
    """A field that takes one value per line or comma: its values, blanks left out."""
    return [value.strip() for value in raw.replace(",", "\n").splitlines() if value.strip()]


def aware(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; they were written in UTC.
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@bp.app_template_filter("age")
def age(value: datetime | None) -> str:
    value = aware(value)
    if value is None:
        return "—"
    seconds = int((datetime.now(UTC) - value).total_seconds())
    if seconds < 5:
        return "just now"
    if seconds < 60:
        return f"{seconds} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86400:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} d ago"


@bp.app_template_filter("when")
def when(value: datetime | None) -> str:
    value = aware(value)
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


@bp.app_template_filter("iso")
def iso(value: datetime | None) -> str:
    value = aware(value)
    return value.isoformat() if value else ""


@bp.app_template_filter("duration")
def duration(ms: float | None) -> str:
    if ms is None:
        return "—"
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms / 60_000:.1f} min"


@bp.app_template_filter("seconds")
def seconds_words(value: float | None) -> str:
    if value is None:
        return "unknown time"
    if value < 1:
        return "under a second"
    if value < 90:
        return f"about {value:.0f} s"
    return f"about {value / 60:.0f} min"


@bp.app_template_filter("usd")
def usd(value: float | None) -> str:
    if value is None:
        return "—"
    return f"${value:,.2f}" if value >= 0.01 or value == 0 else f"${value:.4f}"


@bp.app_template_filter("filesize")
def filesize(n: int | None) -> str:
    if n is None:
        return "—"
    size = float(n)
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


@bp.app_template_filter("percent")
def percent(value: float | None) -> str:
    return f"{(value or 0) * 100:.0f}%"


from web.views import account, dashboard, images, job_rows, jobs, users, workers  # noqa: E402,F401 - routes register on bp
