"""State reports from workers to the control side.

GPU and API workers have no database: they append what happened to a Redis stream
that the control worker applies to Postgres in batches. Publishing retries through a
short broker outage; a report lost with Redis is recovered by the reconciler from the
attempt's manifest, its recorded outcome or its lease.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

from app.config import settings
from app.coordination import Coordination, redis_client

log = logging.getLogger(__name__)
# About 90 s of retries: longer than a Redis restart, shorter than a lease's patience.
RETRY_DELAYS = [0.5 + min(i, 5) * 0.5 for i in range(30)]


def make_report(payload: dict[str, Any], state: str, **fields: Any) -> dict[str, Any]:
    return {
        "item_id": payload["item_id"],
        "job_id": payload["job_id"],
        "attempt": payload["attempt"],
        "state": state,
        "at": time.time(),
        # The control side applies only reports that carry their item's proof (app/proofs.py).
        "input_key": payload.get("input_key"),
        "proof": payload.get("proof"),
        **fields,
    }


def publish_report(payload: dict[str, Any], state: str, *, final: bool = False, **fields: Any) -> None:
    report = make_report(payload, state, **fields)
    coord = Coordination(redis_client(settings().broker_url))
    for delay in [*RETRY_DELAYS, None]:
        try:
            coord.push_report(report, final=final)
            return
        except redis.RedisError as exc:
            if delay is None:
                log.error("could not publish %s report for item %s: %s", state, payload["item_id"], exc)
                return
            log.warning("publishing a %s report failed (retrying in %.1f s): %s", state, delay, exc)
            time.sleep(delay)
