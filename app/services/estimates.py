"""Estimates from measurement: how long an item takes and what it costs, from the items that ran.

Per provider and model, the last WINDOW succeeded items give seconds and cost. Where the provider
can say how parameters change the work (`Provider.work(params)`: a video model's steps, frames and pixels),
the seconds are fitted against the work of each item -- `seconds = fixed + per_unit * work` when the
history holds different amounts of work, `seconds = per_unit * work` when it holds one -- so a job
with twice the steps is estimated from the same history. The spread (p10..p90) is that of the
measured/fitted ratios. No history: no figure (the pages say "no measurements yet").

A job's time remaining comes from its own throughput once an item has finished (finished items
over the time since it started), before that from the history.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from app.db import db
from app.models import Item, Job

# Succeeded items per provider and model the estimate reads (the newest).
WINDOW = 50


def quantile(values: list[float], q: float) -> float:
    """Linear-interpolated quantile of a non-empty list (q in 0..1)."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = q * (len(ordered) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass(frozen=True)
class Sample:
    """One succeeded item: seconds it ran, the work its parameters asked for, what it cost."""

    seconds: float
    work: float = 1.0
    cost_usd: float | None = None


@dataclass(frozen=True)
class Measured:
    """What the history says for one provider and model."""

    samples: int
    # seconds(work) = fixed_s + per_work_s * work; ratio_low/high: p10/p90 of measured/fitted.
    fixed_s: float
    per_work_s: float
    ratio_low: float
    ratio_high: float
    cost_median: float | None = None
    cost_low: float | None = None
    cost_high: float | None = None
    simulated: bool = False

    def seconds(self, work: float = 1.0) -> float:
        return max(0.0, self.fixed_s + self.per_work_s * work)

    def seconds_range(self, work: float = 1.0) -> tuple[float, float]:
        mid = self.seconds(work)
        return mid * self.ratio_low, mid * self.ratio_high


def fit(samples: list[Sample]) -> tuple[float, float]:
    """(fixed seconds, seconds per work unit) for the samples.

    One amount of work (or too little spread in it to tell fixed from proportional): proportional,
    the median of seconds/work. Different amounts: a least-squares line through the median seconds
    of each amount of work (medians, so one slow first run that loaded the model does not tilt
    it), kept only when both terms come out non-negative; else proportional."""
    proportional = quantile([s.seconds / s.work for s in samples], 0.5)
    groups: dict[float, list[float]] = {}
    for s in samples:
        groups.setdefault(round(s.work, 9), []).append(s.seconds)
    works = list(groups)
    if len(works) < 2 or max(works) < 1.2 * min(works):
        return 0.0, proportional
    points = [(w, quantile(seconds, 0.5)) for w, seconds in groups.items()]
    n = len(points)
    mean_w = sum(w for w, _ in points) / n
    mean_s = sum(s for _, s in points) / n
    var = sum((w - mean_w) ** 2 for w, _ in points)
    slope = sum((w - mean_w) * (s - mean_s) for w, s in points) / var
    fixed = mean_s - slope * mean_w
    if slope < 0 or fixed < 0:
        return 0.0, proportional
    return fixed, slope


def summarize(samples: list[Sample], simulated: bool = False) -> Measured | None:
    """The estimate from these samples; None without any."""
    samples = [s for s in samples if s.seconds >= 0 and s.work > 0]
    if not samples:
        return None
    fixed, per_work = fit(samples)
    fitted = [fixed + per_work * s.work for s in samples]
    ratios = [s.seconds / f for s, f in zip(samples, fitted, strict=True) if f > 0] or [1.0]
    costs = [s.cost_usd for s in samples if s.cost_usd is not None]
    return Measured(
        samples=len(samples),
        fixed_s=fixed,
        per_work_s=per_work,
        ratio_low=quantile(ratios, 0.1),
        ratio_high=quantile(ratios, 0.9),
        cost_median=quantile(costs, 0.5) if costs else None,
        cost_low=quantile(costs, 0.1) if costs else None,
        cost_high=quantile(costs, 0.9) if costs else None,
        simulated=simulated,
    )


def wall_seconds(per_item_s: float, count: int, lanes: int | None) -> float:
    """Time to run `count` items of `per_item_s` each on `lanes` workers at once (rounds of lanes)."""
    if count <= 0:
        return 0.0
    lanes = max(1, lanes or 1)
    return math.ceil(count / lanes) * per_item_s


def remaining_seconds(
    counts: dict[str, int],
    started_at: datetime | None,
    now: datetime,
    per_item_s: float | None = None,
    lanes: int | None = None,
) -> tuple[float | None, str]:
    """(seconds left, how it was estimated: "throughput", "history" or "none") for a job.

    Its own throughput once an item finished: finished / elapsed since it started. Before that, the
    history's per-item seconds over `lanes` (else the items running now, at least one)."""
    unfinished = counts.get("pending", 0) + counts.get("queued", 0) + counts.get("running", 0)
    if unfinished == 0:
        return 0.0, "throughput"
    finished = counts.get("succeeded", 0) + counts.get("failed", 0)
    if started_at is not None and finished > 0:
        elapsed = (now - started_at).total_seconds()
        if elapsed > 0:
            return unfinished * elapsed / finished, "throughput"
    if per_item_s is None:
        return None, "none"
    return wall_seconds(per_item_s, unfinished, lanes or max(1, counts.get("running", 0))), "history"


# --- from the database --------------------------------------------------------------------


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def is_simulated(provider_name: str) -> bool:
    """Whether the provider's figures come from a simulated service (its `simulated`)."""
    from app.provider_registry import registry

    provider = registry().get(provider_name)
    return bool(provider is not None and provider.simulated)


def work_of(provider_name: str, params: dict[str, Any]) -> float:
    from app.provider_registry import registry

    provider = registry().get(provider_name)
    if provider is None:
        return 1.0
    try:
        value = float(provider.work(params or {}))
    except (TypeError, ValueError, KeyError):
        return 1.0
    return value if value > 0 else 1.0


def history(provider: str, model: str, window: int = WINDOW) -> Measured | None:
    """The estimate from the newest `window` succeeded items of this provider and model."""
    rows = db.session.execute(
        select(Item.duration_ms, Item.cost_usd, Item.params, Job.params)
        .join(Job, Job.id == Item.job_id)
        .where(
            Item.status == "succeeded",
            Item.provider == provider,
            Job.model == model,
            Item.duration_ms.is_not(None),
        )
        .order_by(Item.updated_at.desc())
        .limit(window)
    ).all()
    samples = [
        Sample(
            seconds=float(duration_ms) / 1000.0,
            work=work_of(provider, {**(job_params or {}), **(item_params or {})}),
            cost_usd=cost,
        )
        for duration_ms, cost, item_params, job_params in rows
    ]
    return summarize(samples, simulated=is_simulated(provider))


def job_remaining(job: Job, measured: Measured | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Time left for a job, as the pages show it: {"seconds", "basis"}; seconds None when unknown."""
    now = now or datetime.now(UTC)
    per_item = None
    if measured is not None:
        per_item = measured.seconds(work_of(job.provider, job.params or {}))
    seconds, basis = remaining_seconds(job.counts(), _aware(job.started_at), now, per_item)
    return {"seconds": seconds, "basis": basis, "per_item_s": per_item}


def remaining_for(jobs: list[Job]) -> dict[str, dict[str, Any]]:
    """Time left for each unfinished job of a list (one history read per provider and model)."""
    cache: dict[tuple[str, str], Measured | None] = {}
    out: dict[str, dict[str, Any]] = {}
    now = datetime.now(UTC)
    for job in jobs:
        if job.status not in ("queued", "running", "paused"):
            continue
        key = (job.provider, job.model)
        if key not in cache:
            cache[key] = history(*key)
        out[job.id] = job_remaining(job, cache[key], now)
    return out
