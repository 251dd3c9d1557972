"""The estimate maths (app/services/estimates.py), in process: no database, no workers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.services.estimates import (
    Sample,
    fit,
    quantile,
    remaining_seconds,
    summarize,
    wall_seconds,
)
from providers.base import Provider
from providers.wan import RESOLUTIONS, WanProvider


def test_quantiles_interpolate() -> None:
    assert quantile([3.0], 0.9) == 3.0
    assert quantile([1.0, 2.0, 3.0, 4.0, 5.0], 0.5) == 3.0
    assert quantile([5.0, 1.0, 3.0], 0.0) == 1.0
    assert quantile([10.0, 20.0], 0.25) == pytest.approx(12.5)


def test_no_history_gives_no_figure() -> None:
    assert summarize([]) is None


def test_one_amount_of_work_is_proportional_with_its_spread() -> None:
    samples = [Sample(s, work=2.0, cost_usd=0.25) for s in (9.0, 10.0, 10.0, 11.0, 30.0)]
    m = summarize(samples)
    assert m is not None and m.samples == 5
    assert (m.fixed_s, m.per_work_s) == (0.0, 5.0)  # median of seconds/work
    # Twice the work: twice the median seconds.
    assert m.seconds(4.0) == pytest.approx(20.0)
    low, high = m.seconds_range(2.0)
    assert low == pytest.approx(9.4) and high == pytest.approx(22.4)
    assert (m.cost_median, m.cost_low, m.cost_high) == (0.25, 0.25, 0.25)


def test_different_amounts_of_work_separate_fixed_from_proportional() -> None:
    # 2 s of fixed time plus 0.5 s per unit, and one slow first run that loaded the model.
    samples = [Sample(2 + 0.5 * w, work=w) for w in (4.0, 4.0, 4.0, 12.0, 12.0, 12.0)]
    samples.append(Sample(40.0, work=4.0))
    fixed, per_work = fit(samples)
    assert fixed == pytest.approx(2.0) and per_work == pytest.approx(0.5)
    m = summarize(samples)
    assert m is not None and m.seconds(24.0) == pytest.approx(14.0)


def test_a_fit_that_makes_no_sense_falls_back_to_proportional() -> None:
    # More work measured faster (noise): no negative slope, the median seconds per unit instead.
    samples = [Sample(3.0, work=1.0), Sample(3.0, work=1.0), Sample(2.0, work=2.0), Sample(2.0, work=2.0)]
    assert fit(samples) == (0.0, pytest.approx(2.0))


def test_wall_time_counts_rounds_of_lanes() -> None:
    assert wall_seconds(10.0, 3, 1) == 30.0
    assert wall_seconds(10.0, 3, 2) == 20.0
    assert wall_seconds(10.0, 3, None) == 30.0
    assert wall_seconds(10.0, 0, 4) == 0.0


def test_remaining_from_own_throughput_then_history() -> None:
    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    counts = {"pending": 5, "queued": 0, "running": 1, "succeeded": 3, "failed": 1, "cancelled": 2}
    # 4 finished in 40 s: 10 s each, 6 left.
    seconds, basis = remaining_seconds(counts, now - timedelta(seconds=40), now, per_item_s=99.0)
    assert (seconds, basis) == (pytest.approx(60.0), "throughput")
    # Nothing finished yet: the history's per-item seconds, one round per item on one lane.
    fresh = {"pending": 2, "queued": 0, "running": 1, "succeeded": 0, "failed": 0, "cancelled": 0}
    assert remaining_seconds(fresh, now, now, per_item_s=5.0) == (15.0, "history")
    assert remaining_seconds(fresh, now, now, per_item_s=5.0, lanes=3) == (5.0, "history")
    # Neither: unknown, said so.
    assert remaining_seconds(fresh, None, now) == (None, "none")
    done = {"pending": 0, "queued": 0, "running": 0, "succeeded": 3, "failed": 0, "cancelled": 5}
    assert remaining_seconds(done, now, now) == (0.0, "throughput")


def test_provider_work_hooks() -> None:
    class Plain(Provider):
        name = "plain"
        queue = "plain"

        def models(self):  # type: ignore[no-untyped-def]
            return []

        def params(self, model):  # type: ignore[no-untyped-def]
            return []

        def run(self, input_path, spec, ctx):  # type: ignore[no-untyped-def]
            raise NotImplementedError

    assert Plain().work({"steps": 50}) == 1.0
    wan = WanProvider()
    base = wan.work({"steps": 2, "num_frames": 9, "resolution": "demo"})
    assert base == pytest.approx(3 * 9 * RESOLUTIONS["demo"] / 1e6)
    # Twice the frames: twice the work; (steps + 1) for the once-per-item decode.
    assert wan.work({"steps": 2, "num_frames": 17, "resolution": "demo"}) == pytest.approx(base * 17 / 9)
    assert wan.work({"steps": 5, "num_frames": 9, "resolution": "demo"}) == pytest.approx(base * 2)
    # Missing parameters are the model's defaults.
    assert wan.work({}) == pytest.approx(wan.work({p.name: p.default for p in wan.params("wan_i2v")}))
