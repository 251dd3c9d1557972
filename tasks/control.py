"""Control-queue tasks: they hold the database; GPU and API workers never run them.

Only the periodic ones are tasks (reconcile, retention); the control worker's standing work runs as
threads of its main process (tasks/control_loops.py).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task

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


# Periodic tasks ack on receipt: if a control worker dies running one, beat sends the next; a late
# ack would only bring the old message back after the visibility timeout. The standing work (applying
# reports, filling windows, sending webhooks) runs as threads of the worker: tasks/control_loops.py.
@celery.task(name="control.reconcile", base=ControlTask, acks_late=False)
def reconcile() -> dict[str, int]:
    from app.services.reconcile import reconcile as run

    return run()


@celery.task(name="control.retention", base=ControlTask, acks_late=False)
def retention() -> dict[str, int]:
    from app.services.retention import sweep

    return sweep()
