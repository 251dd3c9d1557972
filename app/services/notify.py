"""Change notifications: one Redis PUBLISH per job whose counts or status changed, after the commit.

`settle_job` is the one place a job's counts and status change (the report applier, submit,
cancel, retry and the reconciler all go through it); it calls `mark_job_changed`, which notes the
job id in the session. When that session commits, an `after_commit` listener publishes one message
per changed job on `bulkgen:job:{id}`, and one listing them all on `bulkgen:jobs` (pipelined). Waiting requests and event streams
(web/live.py) subscribe to that channel instead of polling the database.

A notification is a hint: it carries no state, a reader re-reads Postgres (the record). Redis
errors are logged and ignored, a rolled-back transaction publishes nothing, and a listener that
missed a message still answers at its deadline with what the database says.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

import redis
from sqlalchemy import event
from sqlalchemy.orm import Session

from app.config import settings
from app.coordination import PREFIX

log = logging.getLogger(__name__)

_CHANGED = "bulkgen.changed_jobs"


# Every change, for pages that show many jobs (the dashboard, the job list): one message per
# commit, the changed job ids separated by commas.
JOBS_CHANNEL = f"{PREFIX}:jobs"


def job_channel(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


@cache
def _publisher(url: str) -> redis.Redis:
    # Short timeouts: a commit must not stall long on a Redis that is down; the hint is dropped.
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=1)


def mark_job_changed(session: Any, job_id: str) -> None:
    """Note that `job_id` changed in this session's transaction; published after its commit."""
    session.info.setdefault(_CHANGED, set()).add(job_id)


def publish(job_ids: list[str] | set[str]) -> None:
    if not job_ids:
        return
    try:
        pipe = _publisher(settings().broker_url).pipeline(transaction=False)
        for job_id in sorted(job_ids):
            pipe.publish(job_channel(job_id), "1")
        pipe.publish(JOBS_CHANNEL, ",".join(sorted(job_ids)))
        pipe.execute()
    except Exception as exc:  # noqa: BLE001 - notifications are hints; the record is Postgres
        log.warning("could not publish job notifications for %d job(s): %s", len(job_ids), exc)


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    changed = session.info.pop(_CHANGED, None)
    if changed:
        publish(changed)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_CHANGED, None)
