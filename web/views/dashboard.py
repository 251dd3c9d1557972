"""The dashboard: queues, providers, spend and recent jobs at a glance."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flask import Response, abort, flash, redirect, render_template, url_for
from sqlalchemy import func, select

from app.config import QUEUES, settings
from app.db import db
from app.models import ITEM_STATUSES, Item, Job
from app.provider_registry import registry
from app.serializers import job_progress
from app.services import scheduler
from app.services.estimates import is_simulated
from app.services.policy import in_flight_cost
from app.services.queues import lanes_by_worker, online_workers, queue_depths, workers_by_queue
from web.auth import admin_required, session_user
from web.views import bp


@dataclass
class QueueRow:
    name: str
    # In the broker's window (None: broker unreachable), and waiting in Postgres for a place in it.
    waiting: int | None
    running: int
    workers: list[str]
    devices: dict[str, list[str]] = field(default_factory=dict)
    pending: int = 0
    paused: bool = False

    @property
    def workers_text(self) -> str:
        return "; ".join(
            f"{w} ({', '.join(self.devices.get(w, [])) or 'device unknown'})" for w in self.workers
        )


@dataclass
class ProviderRow:
    name: str
    label: str
    counts: dict[str, int] = field(default_factory=dict)
    total: int = 0
    success_rate: float | None = None
    mean_duration_ms: float | None = None


def queue_rows() -> tuple[list[QueueRow], bool]:
    """Per queue: messages waiting, items running, workers online; and whether the broker answered."""
    running = dict(
        db.session.execute(
            select(Item.queue, func.count()).where(Item.status == "running").group_by(Item.queue)
        ).all()
    )
    pending = scheduler.pending_by_queue()
    paused = scheduler.paused_queues()
    depths = queue_depths()
    reachable = depths[QUEUES[0]] is not None
    # The worker broadcast waits out its timeouts when the broker is down: skip it then.
    workers = online_workers() if reachable else {}
    lanes = lanes_by_worker() if reachable else {}
    devices = {w: sorted(f"{e['device']} ({e.get('state', 'ready')})" for e in ls) for w, ls in lanes.items()}
    by_queue = workers_by_queue(workers, lanes)
    rows = []
    for q in QUEUES:
        names = by_queue[q]
        rows.append(
            QueueRow(
                name=q,
                waiting=depths[q],
                running=int(running.get(q, 0)),
                workers=names,
                devices={w: devices.get(w, []) for w in names},
                pending=int(pending.get(q, 0)),
                paused=q in paused,
            )
        )
    return rows, reachable


def provider_rows() -> list[ProviderRow]:
    providers = registry()
    rows = {
        name: ProviderRow(name, p.label or name, dict.fromkeys(ITEM_STATUSES, 0))
        for name, p in providers.items()
    }
    sums = [func.coalesce(func.sum(getattr(Job, f"n_{s}")), 0) for s in ITEM_STATUSES]
    for name, total, *counts in db.session.execute(
        select(Job.provider, func.coalesce(func.sum(Job.total), 0), *sums).group_by(Job.provider)
    ):
        row = rows.setdefault(name, ProviderRow(name, name))
        row.total = int(total)
        row.counts = {s: int(c) for s, c in zip(ITEM_STATUSES, counts, strict=True)}
    for name, mean in db.session.execute(
        select(Item.provider, func.avg(Item.duration_ms))
        .where(Item.status == "succeeded", Item.duration_ms.is_not(None))
        .group_by(Item.provider)
    ):
        if name in rows and mean is not None:
            rows[name].mean_duration_ms = float(mean)
    for row in rows.values():
        finished = row.counts.get("succeeded", 0) + row.counts.get("failed", 0)
        row.success_rate = row.counts.get("succeeded", 0) / finished if finished else None
    return list(rows.values())


def runway_spend_today() -> float:
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    value = db.session.scalar(
        select(func.coalesce(func.sum(Item.cost_usd), 0.0)).where(
            Item.provider == "runway", Item.finished_at >= midnight
        )
    )
    return float(value or 0.0)


@bp.get("/")
def dashboard() -> str:
    queues, broker_ok = queue_rows()
    recent = list(db.session.scalars(select(Job).order_by(Job.created_at.desc(), Job.id.desc()).limit(8)))
    context: dict[str, Any] = {
        "queues": queues,
        "broker_ok": broker_ok,
        "providers": provider_rows(),
        "spend_today": runway_spend_today(),
        "spend_in_flight": in_flight_cost(),
        "spend_cap": settings().daily_spend_cap_usd,
        # Runway on the local simulator: its spend and durations are made up, and the page says so.
        "runway_simulated": is_simulated("runway"),
        "recent": recent,
        "progress": {j.id: job_progress(j) for j in recent},
        "flower_url": settings().flower_url,
    }
    return render_template("dashboard.html", **context)


@bp.post("/queues/<name>/pause")
@admin_required
def pause_queue(name: str) -> Response:
    return _set_queue_paused(name, True)


@bp.post("/queues/<name>/resume")
@admin_required
def resume_queue(name: str) -> Response:
    return _set_queue_paused(name, False)


def _set_queue_paused(name: str, paused: bool) -> Response:
    if name not in scheduler.ITEM_QUEUES:
        abort(404, f"there is no queue {name}")
    user = session_user()
    scheduler.set_queue_paused(name, paused, user.id if user else None)
    if paused:
        flash(
            f"Queue {name} paused: its workers stay up and finish what runs; nothing new starts.", "success"
        )
    else:
        flash(f"Queue {name} resumed.", "success")
    return redirect(url_for("admin.dashboard"))
