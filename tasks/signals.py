"""Worker signals: shape GPU workers into a pipeline, and report the outcomes that escaped a task."""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Any

from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    celeryd_after_setup,
    celeryd_init,
    task_failure,
    task_revoked,
    worker_init,
    worker_ready,
    worker_shutdown,
    worker_shutting_down,
)
from celery.worker.control import control_command

from app.broker import RUN_ITEM
from app.config import settings
from app.contract.wire import CancelledReport, ItemMessage
from tasks import runtime
from tasks.items import ItemFailed, report_failure
from tasks.reports import publish_report, report_fields

log = logging.getLogger(__name__)


@after_setup_logger.connect
@after_setup_task_logger.connect
def _json_logs(logger: logging.Logger | None = None, **_: Any) -> None:
    # Celery sets up the worker's logging itself; LOG_JSON switches its handlers' format.
    from app.logs import use_json

    if logger is not None and settings().log_json:
        use_json(logger)


@celeryd_init.connect
def _record_requested_lanes(options: dict | None = None, **_: Any) -> None:
    # `-c N` on a GPU queue means N lanes (devices dealt round robin); without it, one per GPU.
    global _requested_lanes
    _requested_lanes = (options or {}).get("concurrency") or None


_requested_lanes: int | None = None


@worker_init.connect
def _gpu_worker_pool(sender: Any = None, **_: Any) -> None:
    """A GPU-queue worker is one process with a pipeline: threads pool, sized for its lanes.

    Prefork would run one task at a time per child (nothing to overlap with the model) and kill a
    child whose model load outlasts its 4 s start-up timer; here models load in lane threads while
    the worker is up, and its queues are consumed once a model is ready (tasks/lanes.py).
    """
    queues = set(sender.app.amqp.queues.consume_from)
    if queues - {"control"}:
        # An item worker gets storage only through grants: a refused token stops it here.
        from tasks.grants import check_token

        check_token()
    if not runtime.is_gpu_worker(queues):
        return
    from tasks import lanes

    runtime.consumed_queues.update(queues)
    runtime.node_name = sender.hostname
    pipeline = lanes.start(queues, _requested_lanes)
    sender.pool_cls = "threads"
    sender.concurrency = pipeline.threads()
    # The lane thread waits on Redis and storage between model runs; with the default 5 ms switch
    # interval, taking the GIL back from a busy upload or decode thread costs up to 5 ms an item.
    sys.setswitchinterval(0.0005)
    # The pipeline sets the prefetch count itself (tasks/lanes.py); Celery's own reduction after a
    # reconnect would fight it.
    sender.app.conf.worker_enable_prefetch_count_reduction = False


@worker_ready.connect
def _describe_pipeline(**_: Any) -> None:
    # Logged here: Celery's logging is set up only after worker_init.
    from tasks import lanes

    pipeline = lanes.current()
    if pipeline is None:
        # A worker without lanes (the Runway worker) offers its pool's threads to the scheduler;
        # a pipeline announces its own slots with its lanes.
        item_queues = sorted(q for q in runtime.consumed_queues if q != "control")
        if item_queues:
            runtime.announce_slots(item_queues)
        elif runtime.consumed_queues:
            # The control worker offers no item slots; it announces itself for the Workers page.
            runtime.announce_slots(sorted(runtime.consumed_queues), slots=0)
    else:
        log.info(
            "GPU worker: %d lane(s) on %s (%s), %d item threads (batch %d, prefetch %d-%d)",
            len(pipeline.lanes),
            ", ".join(lane.device for lane in pipeline.lanes),
            pipeline.state(),
            pipeline.threads(),
            pipeline.lanes[0].batch,
            pipeline.lanes[0].prefetch_low,
            pipeline.lanes[0].prefetch_high,
        )


@celeryd_after_setup.connect
def _record_queues(sender: Any = None, instance: Any = None, **_: Any) -> None:
    runtime.node_name = str(sender or runtime.node_name)
    runtime.pool_size = int(getattr(instance, "concurrency", 0) or 1)
    try:
        runtime.consumed_queues.update(instance.app.amqp.queues.consume_from.keys())
    except Exception:  # noqa: BLE001 - only used for preloading
        log.debug("could not read consumed queues")


@worker_shutting_down.connect
def _drain(**_: Any) -> None:
    # Warm shutdown: the running items finish; prefetched ones go back to the queue.
    from tasks import lanes

    runtime.draining = True
    pipeline = lanes.current()
    if pipeline is not None:
        pipeline.drain()


@worker_shutdown.connect
def _finish_commits(**_: Any) -> None:
    # Items whose model finished are committed before the process exits.
    from tasks import lanes

    pipeline = lanes.current()
    if pipeline is not None:
        pipeline.finish_commits()
    # A clean exit: the Workers page stops listing this process at once.
    runtime.stop_announcing(pipeline.lane_fields() if pipeline is not None else None)


@control_command()
def drain(state: Any, **_: Any) -> dict[str, str]:
    """Remote control (the Workers page's Drain button): exactly what SIGTERM does. The running items
    finish, prefetched ones go back to the queue, no new one starts, then the process exits (status 0,
    which a supervisor leaves stopped). Celery's own `shutdown` command skips `worker_shutting_down`,
    so a GPU worker's lanes would go on with what they prefetched."""
    log.warning("drain requested by remote control: finishing the running items, then exiting")
    os.kill(os.getpid(), signal.SIGTERM)
    return {"ok": "draining"}


def _message(args: Any) -> ItemMessage | None:
    # The item task's one argument; a message that does not parse names no item to report for.
    return ItemMessage.parse(args[0]) if args else None


@task_failure.connect
def _on_failure(
    sender: Any = None, exception: BaseException | None = None, args: Any = None, **_: Any
) -> None:
    # The item task's body reports every outcome it sees; the only exception it raises itself is
    # ItemFailed, after reporting. Anything else arriving here escaped it (a hard time limit).
    if sender is None or sender.name != RUN_ITEM or exception is None or isinstance(exception, ItemFailed):
        return
    message = _message(args)
    if message is not None:
        report_failure(message, exception, f"{sender.request.hostname}")


@task_revoked.connect
def _on_revoked(request: Any = None, terminated: bool = False, **_: Any) -> None:
    # Revoked before its body ran (e.g. from Flower): nobody else reports it.
    if request is None or getattr(request, "name", None) != RUN_ITEM:
        return
    message = _message(getattr(request, "args", None))
    if message is not None:
        publish_report(
            CancelledReport(
                **report_fields(message),
                state="cancelled",
                detail="revoked by an operator" if terminated else "revoked",
            )
        )
