"""Worker signals: pin each process to its device, and turn task outcomes into state reports."""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    celeryd_after_setup,
    celeryd_init,
    task_failure,
    task_retry,
    task_revoked,
    task_success,
    worker_process_init,
    worker_ready,
)

from tasks import runtime
from tasks.items import report_failure
from tasks.reports import publish_report

log = logging.getLogger(__name__)
RUN_ITEM = "items.run"


@after_setup_logger.connect
@after_setup_task_logger.connect
def _json_logs(logger: logging.Logger | None = None, **_: Any) -> None:
    # Celery sets up the worker's logging itself; LOG_JSON switches its handlers' format.
    from app.config import settings
    from app.logs import use_json

    if logger is not None and settings().log_json:
        use_json(logger)


@celeryd_init.connect
def _size_pool(sender: Any = None, conf: Any = None, options: dict | None = None, **_: Any) -> None:
    # `-Q wan_local` without `-c`: one process per GPU, each pinned to its own device.
    options = options or {}
    if options.get("concurrency"):
        return
    queues = options.get("queues") or []
    if isinstance(queues, str):
        queues = queues.split(",")
    size = runtime.gpu_queue_concurrency({q.strip() for q in queues if q.strip()})
    if size is not None and conf is not None:
        conf.worker_concurrency = size


@celeryd_after_setup.connect
def _record_queues(sender: Any = None, instance: Any = None, **_: Any) -> None:
    runtime.node_name = str(sender or runtime.node_name)
    try:
        runtime.consumed_queues.update(instance.app.amqp.queues.consume_from.keys())
    except Exception:  # noqa: BLE001 - only used for preloading
        log.debug("could not read consumed queues")


@worker_process_init.connect
def _init_child(**_: Any) -> None:
    # Prefork child: choose the GPU before anything touches CUDA, then load models once.
    from billiard.process import current_process

    index = getattr(current_process(), "index", 0) or 0
    log.info("worker process %d pinned to %s", index, runtime.pin_process(index))
    runtime.preload()
    runtime.announce()


@worker_ready.connect
def _init_solo(sender: Any = None, **_: Any) -> None:
    # Solo and threads pools run tasks in this process, and no worker_process_init is sent.
    # A prefork parent must never load a model: CUDA does not survive fork.
    pool_cls = getattr(getattr(sender, "controller", None), "pool_cls", None)
    if pool_cls is None or "prefork" in getattr(pool_cls, "__module__", ""):
        return
    log.info("worker pinned to %s", runtime.pin_process(0))
    runtime.preload()
    runtime.announce()


def _payload(args: Any) -> dict[str, Any] | None:
    if args and isinstance(args[0], dict) and "item_id" in args[0]:
        return args[0]
    return None


@task_success.connect
def _on_success(sender: Any = None, result: Any = None, **_: Any) -> None:
    if sender is None or sender.name != RUN_ITEM or not isinstance(result, dict):
        return
    payload = _payload(sender.request.args)
    if payload is None:
        return
    outcome = result.get("outcome")
    if outcome == "succeeded":
        publish_report(
            payload,
            "succeeded",
            outputs=result.get("outputs"),
            meta=result.get("meta"),
            worker=result.get("worker"),
            duration_ms=result.get("duration_ms"),
            detail="replayed from manifest" if result.get("replayed") else None,
        )
    elif outcome == "cancelled":
        publish_report(payload, "cancelled", worker=result.get("worker"))


@task_failure.connect
def _on_failure(
    sender: Any = None, exception: BaseException | None = None, args: Any = None, **_: Any
) -> None:
    # The item task reports its own failures while it holds the lease; this catches the rest.
    if sender is None or sender.name != RUN_ITEM or exception is None:
        return
    payload = _payload(args)
    if payload is None or getattr(exception, "bulkgen_reported", False):
        return
    report_failure(payload, exception, f"{sender.request.hostname}")


@task_revoked.connect
def _on_revoked(request: Any = None, terminated: bool = False, **_: Any) -> None:
    if request is None or getattr(request, "name", None) != RUN_ITEM:
        return
    payload = _payload(getattr(request, "args", None))
    if payload is not None:
        publish_report(payload, "cancelled", detail="revoked by an operator" if terminated else "revoked")


@task_retry.connect
def _on_retry(request: Any = None, reason: Any = None, **_: Any) -> None:
    if request is None or getattr(request, "task", None) != RUN_ITEM:
        return
    payload = _payload(getattr(request, "args", None))
    if payload is not None:
        publish_report(payload, "failed", error=f"retry: {reason}", error_code="retry", retryable=True)
