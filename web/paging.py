"""The job list's paging cursor, shared by the API's /api/v1/jobs and the Jobs page (links move
between the two): the last row's (created_at, id), newest first."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Select, tuple_

from app.models import Job


def encode_cursor(job: Job) -> str:
    return base64.urlsafe_b64encode(f"{job.created_at.isoformat()}|{job.id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str] | None:
    """The position a cursor names, or None when it is not one this module made."""
    try:
        created, job_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        return datetime.fromisoformat(created), str(uuid.UUID(job_id))
    except (ValueError, UnicodeDecodeError):
        return None


def after(query: Select[Any], position: tuple[datetime, str]) -> Select[Any]:
    """`query` limited to the jobs listed after `position`."""
    return query.where(tuple_(Job.created_at, Job.id) < tuple_(*position))
