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
from app.contract.wire import ItemMessage, Report
from app.coordination import Coordination, redis_client

log = logging.getLogger(__name__)
# The outcomes a worker decides, kept under the attempt too: the reconciler applies one whose report
# was not applied yet instead of mistaking its worker for a lost one.
RECORDED_STATES = ("succeeded", "failed")
# About 90 s of retries: longer than a Redis restart, shorter than a lease's patience.
RETRY_DELAYS = [0.5 + min(i, 5) * 0.5 for i in range(30)]


def report_fields(message: ItemMessage) -> dict[str, Any]:
    """What every report of this attempt carries: whose it is, when, and the item's proof (the
    control side applies only reports that carry it: app/proofs.py)."""
    return {
        "item_id": message.item_id,
        "job_id": message.job_id,
        "attempt": message.attempt,
        "at": time.time(),
        "input_key": message.input_key,
        "proof": message.proof,
    }


def publish_report(report: Report) -> None:
    """Append a report to the stream; a success or failure is also kept under its attempt (a
    cancel needs no record: the cancel flag outlives it). Retries through a short broker outage."""
    coord = Coordination(redis_client(settings().broker_url))
    body = report.wire()
    for delay in [*RETRY_DELAYS, None]:
        try:
            coord.push_report(body, final=report.state in RECORDED_STATES)
            return
        except redis.RedisError as exc:
            if delay is None:
                log.error("could not publish %s report for item %s: %s", report.state, report.item_id, exc)
                return
            log.warning("publishing a %s report failed (retrying in %.1f s): %s", report.state, delay, exc)
            time.sleep(delay)
