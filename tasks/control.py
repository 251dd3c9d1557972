"""Control-queue tasks: they hold the database; GPU and API workers never run them."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from kombu.exceptions import OperationalError as BrokerUnavailable

from tasks.celery_app import celery

log = logging.getLogger(__name__)
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


# Short runs keep a warm shutdown of the control worker quick.
APPLIER_BUDGET_S = 5.0


# Periodic tasks ack on receipt: if a control worker dies running one, beat sends the next; a late
# ack would only bring the old message back after the visibility timeout.
@celery.task(name="control.apply_reports", base=ControlTask, bind=True, ignore_result=True, acks_late=False)
def apply_reports(self: Task) -> int | None:
    """Apply workers' reports for a few seconds, then hand over to the next run.

    One applier at a time (a Redis lock); beat starts one every second in case none runs, and
    each run queues its successor, so reports wait at most a block interval when all is well.
    """
    import os

    from app.services.reports import drain_reports

    applied = drain_reports(holder=f"{self.request.hostname}/{os.getpid()}", budget_s=APPLIER_BUDGET_S)
    if applied is not None:
        try:
            self.apply_async(queue="control", expires=APPLIER_BUDGET_S * 2)
        except BrokerUnavailable as exc:
            # Beat starts an applier every second once the broker is back.
            log.warning("could not queue the next report applier: %s", exc)
    return applied


@celery.task(name="control.reconcile", base=ControlTask, acks_late=False)
def reconcile() -> dict[str, int]:
    from app.services.reconcile import reconcile as run

    return run()


@celery.task(name="control.fill_windows", base=ControlTask, ignore_result=True, acks_late=False)
def fill_windows() -> int:
    """Top up every queue's window (app/services/scheduler.py). The applier fills after each batch
    of reports; this catches what changed otherwise (workers joining, caps, a broker back)."""
    from app.services.scheduler import fill_all

    return sum(f.published for f in fill_all())


@celery.task(name="control.send_webhooks", base=ControlTask, ignore_result=True, acks_late=False)
def send_webhooks() -> int:
    """Start sending the webhook deliveries that are due; the requests run on in this process's
    pool after the task returns (app/services/webhook_delivery.py)."""
    from flask import current_app

    from app.services.webhook_delivery import sender

    return sender(current_app._get_current_object()).tick()


@celery.task(name="control.retention", base=ControlTask, acks_late=False)
def retention() -> dict[str, int]:
    from app.services.retention import sweep

    return sweep()
