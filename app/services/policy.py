"""Provider choice rules: rerouting at submission, and the daily spending cap.

Both are data in the settings: `routing_rules` (ROUTING_RULES, or the short WAN_FALLBACK_* form)
and `daily_spend_cap_usd`. Nothing here names a provider: a rule names its source and target, and a
provider says itself whether it is billed (`billed`) and what an item costs (`cost`). The cap is
applied by the scheduler (app/services/scheduler.py): a billed item enters the window only while
today's spend leaves room for it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import Any

from sqlalchemy import func, select

from app.config import RoutingRule, settings
from app.db import db
from app.models import Item
from app.provider_registry import billed_providers, registry
from app.services.queues import workers_on
from providers import Provider

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reroute:
    """Where a rule sends a new job, and why."""

    rule: RoutingRule
    target: Provider
    reason: str


def reroutes(provider_name: str) -> list[Reroute]:
    """The rules for new jobs of `provider_name` whose condition holds now, in the settings' order.

    Only what the broker says moves work: with the broker unreachable, the queue length and the
    workers online are unknown, and paying another provider on a guess is worse than waiting."""
    found = []
    for rule in settings().routing_rules:
        if rule.from_provider != provider_name:
            continue
        source, target = registry().get(rule.from_provider), registry().get(rule.to_provider)
        if source is None or target is None:
            log.warning(
                "routing rule %s -> %s names a provider not offered here",
                rule.from_provider,
                rule.to_provider,
            )
            continue
        reason = _reason(rule, source.queue)
        if reason is not None:
            found.append(Reroute(rule, target, reason))
    return found


def _reason(rule: RoutingRule, queue: str) -> str | None:
    if rule.when_no_worker and workers_on(queue) == 0:
        return f"no {queue} worker is online"
    if rule.when_waiting_over is not None:
        depth = waiting_on(queue)
        if depth > rule.when_waiting_over:
            return f"the {queue} queue holds {depth} items (threshold {rule.when_waiting_over})"
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


def item_cost(provider_name: str, model: str, params: dict[str, Any]) -> float:
    """Estimated cost of one item that counts against the cap (0 for a provider that is not billed)."""
    provider = registry().get(provider_name)
    if provider is None or not provider.billed:
        return 0.0
    return float(provider.cost(model, params))


def spent_today() -> float:
    """Spend since midnight UTC: finished items' recorded cost plus in-flight items' estimates."""
    midnight = datetime.combine(datetime.now(UTC).date(), time.min, tzinfo=UTC)
    done = db.session.scalar(
        select(func.coalesce(func.sum(Item.cost_usd), 0.0)).where(
            Item.provider.in_(billed_providers()), Item.finished_at >= midnight, Item.cost_usd.is_not(None)
        )
    )
    return float(done or 0.0) + in_flight_cost()


def in_flight_cost() -> float:
    from app.models import Job

    # Per item: an item's own parameters (a longer video) change its cost. What is in flight is
    # the broker's window, a few rows, whatever the backlog.
    rows = db.session.execute(
        select(Item.provider, Job.model, Job.params, Item.params)
        .join(Job, Job.id == Item.job_id)
        .where(Item.provider.in_(billed_providers()), Item.status.in_(("queued", "running")))
    )
    return sum(
        item_cost(provider, model, {**(params or {}), **(own or {})}) for provider, model, params, own in rows
    )
