"""Provider choice rules: WAN→Runway fallback and the daily Runway spending cap."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from providers.runway_sim import RunwaySimServer
from tests.conftest import SystemFactory
from tests.support import distinct_pngs


@pytest.fixture(scope="module")
def runway_sim() -> Iterator[RunwaySimServer]:
    with RunwaySimServer(duration_s=0.5, pending_s=0.1) as sim:
        yield sim


def test_wan_job_falls_back_to_runway_when_no_wan_worker_is_online(
    systems: SystemFactory, runway_sim: RunwaySimServer
) -> None:
    env = {
        "RUNWAY_BASE_URL": runway_sim.base_url,
        "RUNWAY_POLL_INTERVAL_S": "0.2",
        "WAN_FALLBACK_MODEL": "gen4_turbo",
    }
    sysm = systems.start("fallback", workers=("control", "runway"), env=env)
    keys = sysm.api.upload(distinct_pngs(2, seed=50))
    job = sysm.api.submit(keys, provider="wan_local", prompt="a boat", params={"num_frames": 9})
    assert job["provider"] == "runway" and job["model"] == "gen4_turbo"
    assert job["routed_from"] == "wan_local"
    done = sysm.api.wait(job["id"], timeout=120)
    assert done["status"] == "succeeded"
    fallback = [e for e in sysm.api.events(job["id"]) if e["kind"] == "job.fallback"]
    assert len(fallback) == 1 and "no wan_local worker is online" in fallback[0]["detail"]


def test_no_fallback_on_a_guess_when_the_broker_is_unreachable(
    systems: SystemFactory, runway_sim: RunwaySimServer
) -> None:
    env = {"RUNWAY_BASE_URL": runway_sim.base_url, "WAN_FALLBACK_MODEL": "gen4_turbo"}
    sysm = systems.start("fallback-blind", workers=("control", "wan_local"), env=env)
    keys = sysm.api.upload(distinct_pngs(2, seed=52))
    sysm.stack.stop("redis")
    try:
        # Nobody can say whether a WAN worker is online: the job stays on our GPUs, unpublished.
        wan = sysm.api.submit(keys, provider="wan_local", prompt="a boat", params={"num_frames": 9})
        assert wan["provider"] == "wan_local" and wan["routed_from"] is None, wan
        assert wan["counts"]["pending"] == 2, wan
    finally:
        sysm.stack.start_redis()
    assert sysm.api.wait(wan["id"], timeout=300)["status"] == "succeeded"
    assert not [e for e in sysm.api.events(wan["id"]) if e["kind"] == "job.fallback"]


def test_runway_items_wait_visibly_past_the_daily_cap(
    systems: SystemFactory, runway_sim: RunwaySimServer
) -> None:
    # gen4_turbo, 5 s: 5 credits/s x $0.01 = $0.25 per item; a $0.60 cap lets two run today.
    env = {
        "RUNWAY_BASE_URL": runway_sim.base_url,
        "RUNWAY_POLL_INTERVAL_S": "0.2",
        "RUNWAY_DAILY_CAP_USD": "0.60",
    }
    sysm = systems.start("spendcap", workers=("control", "runway"), env=env)
    keys = sysm.api.upload(distinct_pngs(4, seed=51))
    job = sysm.api.submit(keys, provider="runway", model="gen4_turbo", prompt="sea", params={"duration": 5})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = sysm.api.job(job["id"])
        if now["counts"]["succeeded"] == 2:
            break
        time.sleep(0.3)
    # Work that fits the cap (echo costs nothing) submitted to the same queue now: the scheduler
    # ranks it against the waiting Runway items, and by the time it has run, the cap was applied
    # with today's spending recorded.
    free = sysm.api.submit(sysm.api.upload(distinct_pngs(1, seed=53)), params={"queue": "runway"})
    assert sysm.api.wait(free["id"], timeout=60)["status"] == "succeeded"
    now = sysm.api.job(job["id"])
    assert now["counts"]["succeeded"] == 2 and now["counts"]["pending"] == 2, now["counts"]
    assert now["status"] == "running"
    assert "spending cap" in now["waiting_reason"]
    kinds = [(e["kind"], e["detail"]) for e in sysm.api.events(job["id"]) if e["kind"].startswith("job.")]
    assert [k for k, _ in kinds].count("job.waiting") == 1, kinds
    spent = sum(i["cost_usd"] or 0 for i in now["items"])
    assert spent == pytest.approx(0.5)
