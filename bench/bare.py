"""Bare Celery for comparison: `celery -A bench.bare worker -Q bench_bare`.

A no-op task on the same Redis, with the product's reliability settings for a queue of
GPU work (late acks, reject on worker lost, prefetch 1, JSON) and Celery's defaults for
everything else (task events off). Broker and results backend come from BENCH_REDIS_URL.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

QUEUE = "bench_bare"


def make_app(redis_url: str) -> Celery:
    celery = Celery("bench_bare")
    celery.conf.update(
        broker_url=redis_url,
        result_backend=redis_url,
        broker_connection_retry_on_startup=True,
        # The product's broker transport options (priority queues on Redis), so messages land the same way.
        broker_transport_options={
            "queue_order_strategy": "priority",
            "priority_steps": list(range(10)),
            "sep": ":",
        },
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        result_expires=3600,
        worker_hijack_root_logger=False,
        task_default_queue=QUEUE,
    )

    @celery.task(name="bench.noop", shared=False)
    def noop(payload: Any = None) -> None:
        return None

    # The bulk-submit comparison publishes the product's item messages with a plain apply_async
    # loop; this stub only gives the loop a task to call (nothing consumes that queue).
    @celery.task(name="bench.items_run", shared=False)
    def items_run(payload: Any = None) -> None:
        return None

    return celery


app = make_app(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
