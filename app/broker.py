"""Publishing item tasks by name: the web and the control worker never import tasks/ or torch."""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

from celery import Celery

from app.config import settings
from app.contract.wire import ItemMessage
from app.coordination import Coordination, redis_client
from app.proofs import item_proof

log = logging.getLogger(__name__)

RUN_ITEM = "items.run"
# Messages per Redis pipeline when publishing a job's items.
PUBLISH_BATCH = 500


@cache
def celery_client() -> Celery:
    client = Celery("bulkgen")
    client.config_from_object("celeryconfig")
    client.conf.broker_connection_timeout = 3
    return client


def coordination() -> Coordination:
    return Coordination(redis_client(settings().broker_url))


def item_payload(
    item: Any, job: Any, *, dispatch: str | None = None, redelivery: bool = False
) -> ItemMessage:
    """The whole message a worker needs: GPU hosts cannot look anything up in the database."""
    return ItemMessage(
        item_id=item.id,
        job_id=item.job_id,
        attempt=item.attempt,
        provider=item.provider,
        model=job.model,
        input_key=item.input_key,
        # An item's own prompt, concepts and parameters (per-image work) win over the job's.
        prompt=item.prompt if item.prompt is not None else job.prompt,
        prompts=list(item.prompts if item.prompts is not None else job.prompts or []),
        params={**(job.params or {}), **(item.params or {})},
        deadline_s=float(settings().item_deadline_s),
        # Lets the worker speak for this item and attempt only (reports, storage grants).
        proof=item_proof(item.job_id, item.id, item.attempt, item.input_key),
        dispatch=dispatch,
        redelivery=redelivery,
    )


def publish_items(messages: list[tuple[ItemMessage, str, int]], countdown: float | None = None) -> list[str]:
    """Publish (message, queue, priority) triples; returns the item ids that reached the broker.

    Stops at the first failure: whatever was not published stays pending for the reconciler.
    """
    if not messages:
        return []
    client = celery_client()
    published: list[str] = []
    try:
        coordination().set_attempts(
            {m.item_id: m.attempt for m, _, _ in messages},
            {m.item_id: m.dispatch for m, _, _ in messages if m.dispatch},
        )
        with client.producer_or_acquire() as producer:
            for start in range(0, len(messages), PUBLISH_BATCH):
                chunk = messages[start : start + PUBLISH_BATCH]
                # One Redis pipeline per chunk; a chunk that fails to flush counts as unpublished
                # (whatever of it did reach Redis is a duplicate later, which the lease absorbs).
                with producer.batch(max_size=2 * len(chunk) + 1):
                    for message, queue, priority in chunk:
                        client.send_task(
                            RUN_ITEM,
                            args=[message.wire()],
                            task_id=message.item_id,
                            queue=queue,
                            routing_key=queue,
                            priority=priority,
                            countdown=countdown,
                            producer=producer,
                            # The record is Postgres and the manifest; progress is stored explicitly.
                            # (Also spares the publisher a result subscription per task.)
                            ignore_result=True,
                        )
                published.extend(message.item_id for message, _, _ in chunk)
    except Exception as exc:  # noqa: BLE001 - any broker trouble means "publish later"
        log.warning("publish stopped after %d of %d items: %s", len(published), len(messages), exc)
    return published
