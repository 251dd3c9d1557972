"""The Celery app: `celery -A tasks worker -Q wan_local` (or runway, sam3, control).

`celery -A tasks` looks for `tasks.app` or `tasks.celery`; both are bound to the
Celery instance below. Never `import app.something` in this module: that would
bind the name `app` to the project's `app` package and shadow the Celery app.
"""

from tasks import control, control_loops, items, lanes, signals  # noqa: E402,F401 - registers tasks and signal handlers
from tasks.celery_app import celery

celery.steps["consumer"].add(lanes.ModelGate)
app = celery

__all__ = ["app", "celery"]
