"""Control-queue tasks: they hold the database; GPU and API workers never run them."""

from __future__ import annotations

from typing import Any

from celery import Task
from sqlalchemy.exc import InterfaceError, OperationalError

from tasks.celery_app import celery

_flask_app: Any = None


def flask_app() -> Any:
    """The core Flask app, built on first use so GPU workers never need database settings."""
    global _flask_app
    if _flask_app is None:
        from app.core import create_core_app

        _flask_app = create_core_app("bulkgen-control")
    return _flask_app


class ControlTask(Task):
    """Runs inside a Flask app context; the session is removed after every task."""

    abstract = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from flask import has_app_context

        from app.db import db

        if has_app_context():
            return super().__call__(*args, **kwargs)
        with flask_app().app_context():
            try:
                return super().__call__(*args, **kwargs)
            finally:
                db.session.remove()


# A database outage must not drop reports: retry them until the database is back.
DB_DOWN = (OperationalError, InterfaceError)


@celery.task(
    name="control.report",
    base=ControlTask,
    acks_late=True,
    ignore_result=True,
    autoretry_for=DB_DOWN,
    retry_backoff=1,
    retry_backoff_max=30,
    retry_jitter=True,
    max_retries=None,
)
def report(report: dict[str, Any]) -> str | None:
    from app.services.jobs import dispatch_items
    from app.services.reports import apply_report

    old = apply_report(report)
    if report.get("state") == "failed" and old is not None:
        # A retryable failure put the item back to pending with attempt + 1: publish it now.
        dispatch_items(report["job_id"], [report["item_id"]])
    return old


@celery.task(name="control.reconcile", base=ControlTask)
def reconcile() -> dict[str, int]:
    from app.services.reconcile import reconcile as run

    return run()


@celery.task(
    name="control.dispatch_job",
    base=ControlTask,
    acks_late=True,
    ignore_result=True,
    autoretry_for=DB_DOWN,
    retry_backoff=1,
    retry_backoff_max=30,
    max_retries=None,
)
def dispatch_job(job_id: str) -> int:
    from app.services.jobs import dispatch_items

    return dispatch_items(job_id)


@celery.task(name="control.retention", base=ControlTask)
def retention() -> dict[str, int]:
    from app.services.retention import sweep

    return sweep()
