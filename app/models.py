"""Postgres holds intent: jobs, items, attempts, events, users and tokens."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import db


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class ItemStatus(enum.StrEnum):
    pending = "pending"
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


ITEM_STATUSES = [s.value for s in ItemStatus]
# A job's status is derived from its items' (app/services/items.py: derive_status).
JOB_STATUSES = ("queued", "running", "paused", "succeeded", "failed", "cancelled")
FINISHED = (ItemStatus.succeeded.value, ItemStatus.failed.value, ItemStatus.cancelled.value)
UNFINISHED = (ItemStatus.pending.value, ItemStatus.queued.value, ItemStatus.running.value)
PRIORITIES = {"high": 0, "normal": 3, "low": 6}

# Event ids grow fast; SQLite only autoincrements INTEGER primary keys.
BigId = BigInteger().with_variant(Integer(), "sqlite")
Timestamp = DateTime(timezone=True)


class User(db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(255), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    # "admin": users, tokens, settings and every job; "member": submits, and manages their own jobs.
    role: Mapped[str] = mapped_column(String(20), default="member")
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    # Signs this user's webhook deliveries (Standard Webhooks: "whsec_" + base64). Made on first use;
    # after a rotation the previous secret also signs for a day, so receivers can switch over.
    webhook_secret: Mapped[str | None] = mapped_column(String(100))
    webhook_secret_previous: Mapped[str | None] = mapped_column(String(100))
    webhook_secret_rotated_at: Mapped[datetime | None] = mapped_column(Timestamp)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class ApiToken(db.Model):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    # sha256 of the token; the token itself is shown once and never stored.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    # "write": everything the user may do; "read": GET only (dashboards and scripts).
    scope: Mapped[str] = mapped_column(String(10), default="write")
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(Timestamp)
    revoked_at: Mapped[datetime | None] = mapped_column(Timestamp)

    user: Mapped[User] = relationship()


class WorkerToken(db.Model):
    """What a GPU or API host shows to get storage grants; it opens nothing else."""

    __tablename__ = "worker_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    # sha256 of the token; the token itself is shown once and never stored.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(Timestamp)
    revoked_at: Mapped[datetime | None] = mapped_column(Timestamp)


class Asset(db.Model):
    """Metadata of an uploaded input; the bytes live in object storage under `key`."""

    __tablename__ = "assets"

    key: Mapped[str] = mapped_column(String(512), primary_key=True)
    filename: Mapped[str] = mapped_column(String(255), default="")
    size: Mapped[int] = mapped_column(BigInteger)
    content_type: Mapped[str] = mapped_column(String(100))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    thumbnail_key: Mapped[str | None] = mapped_column(String(512))
    uploaded_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


def status_counts(job: Any) -> dict[str, int]:
    """Items per status from a job's n_* columns (a Job, or a row selected with them)."""
    return {s: getattr(job, f"n_{s}") for s in ITEM_STATUSES}


class Job(db.Model):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("created_by", "idempotency_key", name="uq_jobs_created_by_idempotency_key"),
        Index("ix_jobs_created_at", "created_at"),
        Index("ix_jobs_status_created_at", "status", "created_at"),
        Index("ix_jobs_provider_created_at", "provider", "created_at"),
        Index("ix_jobs_finished_at", "finished_at"),
        # The scheduler's candidates: jobs with work not yet handed to the broker (few at a time).
        Index(
            "ix_jobs_with_pending",
            "created_at",
            postgresql_where=text("n_pending > 0"),
            sqlite_where=text("n_pending > 0"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    provider: Mapped[str] = mapped_column(String(50))
    model: Mapped[str] = mapped_column(String(100))
    prompt: Mapped[str | None] = mapped_column(Text)
    prompts: Mapped[list[str]] = mapped_column(JSON, default=list)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    priority: Mapped[str] = mapped_column(String(10), default="normal")
    status: Mapped[str] = mapped_column(String(20), default="queued")
    total: Mapped[int] = mapped_column(Integer, default=0)
    # Counts by item status, kept exact by updating them in the same transaction as each item.
    n_pending: Mapped[int] = mapped_column(Integer, default=0)
    n_queued: Mapped[int] = mapped_column(Integer, default=0)
    n_running: Mapped[int] = mapped_column(Integer, default=0)
    n_succeeded: Mapped[int] = mapped_column(Integer, default=0)
    n_failed: Mapped[int] = mapped_column(Integer, default=0)
    n_cancelled: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    # sha256 of the submission the idempotency key was first used with (see create_job).
    request_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(Timestamp)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp)
    cancelled_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # Why some items are held back (e.g. the daily Runway spending cap); None when nothing waits.
    waiting_reason: Mapped[str | None] = mapped_column(Text)
    # Set when the job was routed to another provider than asked for (WAN fallback).
    routed_from: Mapped[str | None] = mapped_column(String(50))
    # Where to tell about this job's progress, and which events (webhooks.EVENTS) to send there.
    webhook: Mapped[str | None] = mapped_column(Text)
    webhook_events: Mapped[list[str] | None] = mapped_column(JSON)
    # Retention: when the outputs were removed, and when attempt directories other than each item's
    # recorded one were last swept (a retry that finishes the job again makes both due again).
    outputs_expired_at: Mapped[datetime | None] = mapped_column(Timestamp)
    orphans_swept_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # Scheduling: a paused job gets no new item into the broker's window (running ones finish);
    # max_concurrency caps its items in flight (queued or running); None: no cap.
    paused_at: Mapped[datetime | None] = mapped_column(Timestamp)
    max_concurrency: Mapped[int | None] = mapped_column(Integer)

    creator: Mapped[User | None] = relationship()

    def counts(self) -> dict[str, int]:
        return status_counts(self)


class Item(db.Model):
    __tablename__ = "items"
    __table_args__ = (
        Index("ix_items_job_id_idx", "job_id", "idx"),
        Index("ix_items_job_id_status", "job_id", "status"),
        Index("ix_items_status_updated_at", "status", "updated_at"),
        # The scheduler reads the head of each job's pending items per queue, and the items in
        # flight per queue: both stay small whatever the backlog.
        Index(
            "ix_items_pending_head",
            "job_id",
            "queue",
            "idx",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        Index(
            "ix_items_pending_retry",
            "queue",
            "idx",
            postgresql_where=text("status = 'pending' AND attempt > 1"),
            sqlite_where=text("status = 'pending' AND attempt > 1"),
        ),
        Index(
            "ix_items_in_flight",
            "queue",
            "status",
            postgresql_where=text("status IN ('queued', 'running')"),
            sqlite_where=text("status IN ('queued', 'running')"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    idx: Mapped[int] = mapped_column(Integer)
    input_key: Mapped[str] = mapped_column(String(512))
    # What this item was given of its own (per-image work); None: the job's. `params` holds only
    # the values that differ from the job's (merged over them when the item is sent).
    prompt: Mapped[str | None] = mapped_column(Text)
    prompts: Mapped[list[str] | None] = mapped_column(JSON)
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    provider: Mapped[str] = mapped_column(String(50))
    queue: Mapped[str] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(20), default=ItemStatus.pending.value)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    outputs: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    manifest_key: Mapped[str | None] = mapped_column(String(512))
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(100))
    worker: Mapped[str | None] = mapped_column(String(255))
    device: Mapped[str | None] = mapped_column(String(255))
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    remote_id: Mapped[str | None] = mapped_column(String(100))
    cost_usd: Mapped[float | None] = mapped_column(Float)
    duration_ms: Mapped[float | None] = mapped_column(Float)
    # When the reconciler first saw a running item without its lease; cleared when it returns.
    lease_lost_at: Mapped[datetime | None] = mapped_column(Timestamp)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    queued_at: Mapped[datetime | None] = mapped_column(Timestamp)
    started_at: Mapped[datetime | None] = mapped_column(Timestamp)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)

    job: Mapped[Job] = relationship()


class Event(db.Model):
    """Append-only log of state changes per job and item."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_job_id_id", "job_id", "id"), Index("ix_events_item_id", "item_id"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    item_id: Mapped[str | None] = mapped_column(String(36))
    at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    kind: Mapped[str] = mapped_column(String(40))
    from_status: Mapped[str | None] = mapped_column(String(20))
    to_status: Mapped[str | None] = mapped_column(String(20))
    attempt: Mapped[int | None] = mapped_column(Integer)
    worker: Mapped[str | None] = mapped_column(String(255))
    detail: Mapped[str | None] = mapped_column(Text)


class WebhookDelivery(db.Model):
    """One event to tell a job's webhook, and how telling it went (the outbox and the delivery log).

    Rows are written in the transaction that makes the event happen, so an event is never lost nor
    sent for a change that rolled back; the control side sends them, oldest first per job."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_job_id_id", "job_id", "id"),
        Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # The `webhook-id` header: the same on every attempt, so receivers can drop duplicates.
    msg_id: Mapped[str] = mapped_column(String(40), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    item_id: Mapped[str | None] = mapped_column(String(36))
    event: Mapped[str] = mapped_column(String(40))
    url: Mapped[str] = mapped_column(Text)
    # host:port of the URL: the sender caps requests in flight per destination, and skips a
    # destination at its cap when it claims, so a receiver that hangs cannot crowd out the others.
    destination: Mapped[str] = mapped_column(String(300))
    # pending (to send, or being sent) -> delivered | failed (gave up; "redeliver" makes it pending)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Failed attempts since it was (re)queued: picks the next delay, and when to give up.
    failures: Mapped[int] = mapped_column(Integer, default=0)
    # The body, fixed at the first attempt so every attempt sends the same bytes.
    payload: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    last_attempt_at: Mapped[datetime | None] = mapped_column(Timestamp)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_latency_ms: Mapped[float | None] = mapped_column(Float)
    delivered_at: Mapped[datetime | None] = mapped_column(Timestamp)


class QueueState(db.Model):
    """A queue paused for maintenance: its workers stay up and no new work reaches them."""

    __tablename__ = "queue_states"

    queue: Mapped[str] = mapped_column(String(50), primary_key=True)
    paused_at: Mapped[datetime | None] = mapped_column(Timestamp)
    paused_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    updated_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
