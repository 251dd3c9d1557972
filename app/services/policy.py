"""Provider choice rules: WAN→Runway fallback at submission, and the daily Runway spending cap.

Both are off unless configured (WAN_FALLBACK_MODEL, RUNWAY_DAILY_CAP_USD). The cap is applied by the
scheduler (app/services/scheduler.py): a Runway item enters the window only while today's spend
leaves room for it.
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
from app.services.queues import workers_on

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
    depth = waiting_on("wan_local")
    if depth > s.wan_fallback_queue_length:
        return f"the wan_local queue holds {depth} items (threshold {s.wan_fallback_queue_length})"
    return None


def waiting_on(queue: str) -> int:
    """Items waiting for a worker of `queue` (pending in Postgres or in the broker's window)."""
    return int(
        db.session.scalar(
            select(func.count())
            .select_from(Item)
            .where(Item.queue == queue, Item.status.in_(("pending", "queued")))
        )
        or 0
    )


def runway_cost(model: str, params: dict[str, Any]) -> float:
    """Estimated cost of one item, from the provider's model description."""
    provider = registry().get("runway")
    if provider is None:
        return 0.0
    for m in provider.models():
        if m.name == model:
            per_second = m.constraints.get("credits_per_second")
            if params.get("audio") is False:
                # Veo without its audio track is billed at a lower rate.
                per_second = m.constraints.get("credits_per_second_without_audio", per_second)
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

    # Per item: an item's own parameters (a longer video) change its cost. What is in flight is
    # the broker's window, a few rows, whatever the backlog.
    rows = db.session.execute(
        select(Job.model, Job.params, Item.params)
        .join(Job, Job.id == Item.job_id)
        .where(Item.provider == "runway", Item.status.in_(("queued", "running")))
    )
    return sum(runway_cost(model, {**(params or {}), **(own or {})}) for model, params, own in rows)
