"""State reports from workers to the control queue.

GPU and API workers have no database: they tell the control worker what happened
and it applies that to Postgres. Reports are small dicts, published with retries
so a short broker outage does not drop them (lost ones are recovered from manifests).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from tasks.celery_app import celery

log = logging.getLogger(__name__)
REPORT_TASK = "control.report"
RETRY = {"max_retries": 30, "interval_start": 0.5, "interval_step": 1.0, "interval_max": 3.0}


def publish_report(payload: dict[str, Any], state: str, **fields: Any) -> None:
    report = {
        "item_id": payload["item_id"],
        "job_id": payload["job_id"],
        "attempt": payload["attempt"],
        "state": state,
        "at": time.time(),
        **fields,
    }
    try:
        celery.send_task(REPORT_TASK, args=[report], queue="control", retry=True, retry_policy=RETRY)
    except Exception as exc:  # noqa: BLE001 - the reconciler recovers from the manifest or the lease
        log.error("could not publish %s report for item %s: %s", state, payload["item_id"], exc)
