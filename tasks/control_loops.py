"""The control worker's standing work, as threads of its main process rather than a task a second.

A worker that consumes the `control` queue starts, through a bootstep (`ControlLoops`):

- report appliers (one per applier partition): each takes a partition's Redis lock, applies the
  workers' reports from the stream for a turn of a few seconds (each batch acked after its commit,
  each batch followed by topping up the windows it freed), releases the lock and goes again. While
  another control worker holds every partition, it waits and tries again: a standby that takes over
  when the holder is killed, once the lock's TTL runs out;
- the window filler: tops up every queue's window each second (workers joining, caps changing, a
  broker back: what no report announces);
- the webhook sender: claims the due deliveries each second and hands them to its request pool.

They run in the worker's main process, where Celery runs worker bootsteps, whatever the pool: the
prefork children only run the periodic tasks (reconcile, retention). A warm shutdown (SIGTERM) stops
the loops between turns and joins them; a kill loses nothing, as reports stay unacked in the stream
until a batch commits, and the next applier of that partition reads them again first.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from celery import bootsteps

from tasks.celery_app import celery

log = logging.getLogger(__name__)

CONTROL_QUEUE = "control"
# How long an applier holds its partition before it lets go (and notices a shutdown).
APPLIER_TURN_S = 2.0
# How often a standby applier asks for a partition another control worker holds.
STANDBY_S = 1.0
# How often the windows are topped up and due webhooks claimed when nothing else asks for it.
TICK_S = 1.0
# How long a warm shutdown waits for a loop past its turn; the threads are daemons, so an exit
# never hangs on them, and what they had not committed is read or claimed again.
JOIN_S = APPLIER_TURN_S + 10.0

_app: Any = None
_app_lock = threading.Lock()


def loops_app() -> Any:
    """The Flask app of the loops: built in the main process, apart from the one the prefork
    children build for their tasks (tasks/control.py), so no child ever uses its connections."""
    global _app
    with _app_lock:
        if _app is None:
            from app.core import create_core_app
            from app.db import db

            _app = create_core_app("bulkgen-control-loops")
            with _app.app_context():
                engine = db.engine
            # A pool child forked while these threads run must not reuse their connections
            # (SQLAlchemy's advice for fork: drop the pool in the child without closing it).
            os.register_at_fork(after_in_child=lambda: engine.dispose(close=False))
        return _app


def in_app_context(work: Callable[[], Any]) -> Any:
    """Run `work` in its own app context; the session goes with it."""
    from app.db import db

    with loops_app().app_context():
        try:
            return work()
        finally:
            db.session.remove()


def apply_reports_loop(stop: threading.Event, holder: str) -> None:
    from app.services.reports import drain_reports

    while not stop.is_set():
        try:
            applied = in_app_context(lambda: drain_reports(holder=holder, budget_s=APPLIER_TURN_S))
        except Exception:  # noqa: BLE001 - the loop outlives any turn; unacked reports are read again
            log.exception("report applier turn failed")
            applied = None
        if applied is None:
            stop.wait(STANDBY_S)


def fill_windows() -> int:
    from app.services.scheduler import fill_all

    return sum(f.published for f in fill_all())


def send_webhooks() -> int:
    """Start sending the due deliveries; the requests run on in the sender's pool
    (app/services/webhook_delivery.py)."""
    from flask import current_app

    from app.services.webhook_delivery import sender

    return sender(current_app._get_current_object()).tick()


def every(stop: threading.Event, interval_s: float, work: Callable[[], Any], what: str) -> None:
    while not stop.wait(interval_s):
        try:
            in_app_context(work)
        except Exception:  # noqa: BLE001 - logged; the next tick tries again
            log.exception("%s failed", what)


class ControlLoops(bootsteps.StartStopStep):
    """Starts the loops in a worker that consumes the control queue, after its pool (prefork forks
    its children before any loop thread exists) and stops them before the pool on shutdown."""

    requires = ("celery.worker.components:Pool",)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []

    def include_if(self, worker: Any) -> bool:
        return CONTROL_QUEUE in worker.app.amqp.queues.consume_from

    def start(self, worker: Any) -> None:
        from app.config import settings

        loops_app()
        holder = f"{worker.hostname}/{os.getpid()}"
        targets: list[tuple[str, Callable[..., None], tuple[Any, ...]]] = [
            (f"report-applier-{n}", apply_reports_loop, (self.stopping, f"{holder}/{n}"))
            for n in range(settings().applier_partitions)
        ]
        targets += [
            ("window-filler", every, (self.stopping, TICK_S, fill_windows, "window fill")),
            ("webhook-sender", every, (self.stopping, TICK_S, send_webhooks, "webhook claim")),
        ]
        for name, target, args in targets:
            thread = threading.Thread(target=target, args=args, name=name, daemon=True)
            thread.start()
            self.threads.append(thread)
        log.info("control loops running: %s", ", ".join(t.name for t in self.threads))

    def stop(self, worker: Any) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(JOIN_S)
            if thread.is_alive():
                log.warning("%s still running at shutdown; what it had not committed is read again", thread)
        self.threads.clear()

    def terminate(self, worker: Any) -> None:
        # Cold shutdown: let the threads go with the process.
        self.stopping.set()

    def shutdown(self, worker: Any) -> None:
        self.stopping.set()


celery.steps["worker"].add(ControlLoops)
