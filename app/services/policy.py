"""Provider choice rules: WAN→Runway fallback at submission, and the daily Runway spending cap.

Both are off unless configured (WAN_FALLBACK_MODEL, RUNWAY_DAILY_CAP_USD).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, time
from typing import Any

from sqlalchemy import func, select

from app.config import settings
from app.db import db
from app.models import Item
from app.providers import registry
from app.services.queues import queue_depths, workers_on

log = logging.getLogger(__name__)


def wan_fallback_reason() -> str | None:
    """Why new wan_local work should go to Runway now, or None to keep it local.

    Only what the broker says moves work: with the broker unreachable, the queue length and the
    workers online are unknown, and paying Runway on a guess is worse than waiting."""
    s = settings()
    if not s.wan_fallback_model or "runway" not in registry():
        return None
    if workers_on("wan_local") == 0:
        return "no wan_local worker is online"
    depth = queue_depths().get("wan_local")
    if depth is not None and depth > s.wan_fallback_queue_length:
        return f"the wan_local queue holds {depth} items (threshold {s.wan_fallback_queue_length})"
    return None


def runway_cost(model: str, params: dict[str, Any]) -> float:
    """Estimated cost of one item, from the provider's model description."""
    provider = registry().get("runway")
    if provider is None:
        return 0.0
    for m in provider.models():
        if m.name == model:
            per_second = m.constraints.get("credits_per_second")
            usd = m.constraints.get("usd_per_credit")
            duration = params.get("duration")
            if per_second and usd and duration:
                return float(per_second) * float(usd) * float(duration)
            return float(m.cost_per_item_usd or 0.0)
    return 0.0


def runway_spent_today() -> float:
    """Spend since midnight UTC: finished items' recorded cost plus in-flight items' estimates."""
    midnight = datetime.combine(datetime.now(UTC).date(), time.min, tzinfo=UTC)
    done = db.session.scalar(
        select(func.coalesce(func.sum(Item.cost_usd), 0.0)).where(
            Item.provider == "runway", Item.finished_at >= midnight, Item.cost_usd.is_not(None)
        )
    )
    return float(done or 0.0) + in_flight_runway_cost()


def in_flight_runway_cost() -> float:
    from app.models import Job

    # Count per job first: Postgres cannot GROUP BY a json column (Job.params).
    per_job = (
        select(Item.job_id, func.count().label("n"))
        .where(Item.provider == "runway", Item.status.in_(("queued", "running")))
        .group_by(Item.job_id)
        .subquery()
    )
    rows = db.session.execute(
        select(Job.model, Job.params, per_job.c.n).join(per_job, per_job.c.job_id == Job.id)
    )
    return sum(runway_cost(model, params or {}) * count for model, params, count in rows)


def runway_budget(count: int, model: str, params: dict[str, Any]) -> tuple[int, str | None]:
    """How many of `count` Runway items may be published now under the daily cap, and why not all."""
    cap = settings().runway_daily_cap_usd
    if cap is None:
        return count, None
    each = runway_cost(model, params)
    spent = runway_spent_today()
    if each <= 0:
        return count, None
    allowed = max(0, min(count, int((cap - spent) // each)))
    if allowed < count:
        return allowed, (
            f"daily Runway spending cap of ${cap:.2f} reached; "
            "items wait and start after midnight UTC or when the cap is raised"
        )
    return count, None
