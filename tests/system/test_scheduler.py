"""The system decides what runs next: the window, the order, the limits, pause and priority."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from tests.conftest import System, SystemFactory
from tests.support import Api, distinct_pngs

ECHO = {"queue": "wan_local"}


@pytest.fixture(autouse=True)
def stop_own_systems(systems: SystemFactory) -> Iterator[None]:
    """Each test starts a system of its own: stopped when the test ends, not with the session."""
    count = len(systems.started)
    yield
    systems.stop_since(count)


def broker_depth(system: System, queue: str = "wan_local") -> int:
    r = system.redis()
    return int(r.llen(queue)) + sum(int(r.llen(f"{queue}:{step}")) for step in range(1, 10))


def assert_fills_never_failed(system: System) -> None:
    """A fill that raises is only logged (beat fills again a second later): look for it."""
    for name in ("web", "control"):
        log = system.stack.procs[name].log()
        assert "could not fill" not in log, log[log.index("could not fill") - 2000 :][:4000]


def in_flight(job: dict[str, Any]) -> int:
    return job["counts"]["queued"] + job["counts"]["running"]


def started(item: dict[str, Any]) -> float:
    return datetime.fromisoformat(item["started_at"]).timestamp()


def watch(api: Api, job_ids: list[str], seconds: float, every: float = 0.2) -> list[dict[str, dict]]:
    """Snapshots of the jobs every `every` s for `seconds` (one request each: one consistent read)."""
    samples = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        jobs = {j["id"]: j for j in api.get("/api/v1/jobs", params={"limit": 20}).json()["jobs"]}
        samples.append({j: jobs[j] for j in job_ids})
        time.sleep(every)
    return samples


def test_the_broker_holds_a_window_and_a_small_job_overtakes_a_big_one(systems: SystemFactory) -> None:
    sysm = systems.start("window", workers=("control", "wan_local"))
    keys = sysm.api.upload(distinct_pngs(6, seed=61))
    big = sysm.api.submit([keys[i % 6] for i in range(60)], params={**ECHO, "delay_s": 0.3})
    sysm.api.wait_item(big["id"], lambda i: i["status"] == "succeeded", 60)
    # One worker with one lane: the broker holds a couple of messages, Postgres the rest.
    depths = []
    for _ in range(10):
        depths.append(broker_depth(sysm))
        time.sleep(0.1)
    now = sysm.api.job(big["id"])
    assert max(depths) <= 4, depths
    assert now["counts"]["pending"] >= 40, now["counts"]

    small = sysm.api.submit(keys[:3], params={**ECHO, "delay_s": 0.3})
    done = sysm.api.wait(small["id"], timeout=60)
    assert done["status"] == "succeeded"
    # Round robin across the user's jobs: the big job has most of its items still to run.
    assert sysm.api.job(big["id"])["counts"]["pending"] >= 30
    assert sysm.api.wait(big["id"], timeout=120)["status"] == "succeeded"
    assert_fills_never_failed(sysm)


def test_pause_and_resume_a_job(systems: SystemFactory) -> None:
    sysm = systems.start("pause", workers=("control", "wan_local"))
    keys = sysm.api.upload(distinct_pngs(4, seed=62))
    job = sysm.api.submit([keys[i % 4] for i in range(12)], params={**ECHO, "delay_s": 0.5})
    sysm.api.wait_item(job["id"], lambda i: i["status"] == "running", 30)

    r = sysm.api.post(f"/api/v1/jobs/{job['id']}/pause")
    assert r.status_code == 200, r.text
    assert r.json()["paused"] is True and r.json()["job"]["status"] == "paused"
    assert r.json()["job"]["paused_at"]
    time.sleep(2.5)  # the running item finishes; nothing new starts
    before = sysm.api.job(job["id"])
    time.sleep(2.5)
    after = sysm.api.job(job["id"])
    assert after["status"] == "paused"
    assert after["counts"] == before["counts"], (before["counts"], after["counts"])
    assert after["counts"]["running"] == 0 and after["counts"]["queued"] == 0
    assert after["counts"]["pending"] >= 6
    assert broker_depth(sysm) == 0

    r = sysm.api.post(f"/api/v1/jobs/{job['id']}/resume")
    assert r.status_code == 200 and r.json()["resumed"] is True
    done = sysm.api.wait(job["id"], timeout=60)
    assert done["status"] == "succeeded" and done["counts"]["succeeded"] == 12
    assert all(i["attempt"] == 1 for i in done["items"])
    kinds = [e["kind"] for e in sysm.api.events(job["id"])]
    assert_fills_never_failed(sysm)
    assert "job.paused" in kinds and "job.resumed" in kinds
    statuses = [e["to_status"] for e in sysm.api.events(job["id"]) if e["kind"] == "job.status"]
    assert "paused" in statuses

    # A finished job cannot be paused.
    assert sysm.api.post(f"/api/v1/jobs/{job['id']}/pause").status_code == 409


def test_reprioritise_a_job_in_flight(systems: SystemFactory) -> None:
    sysm = systems.start("reprio", workers=("control", "wan_local"))
    keys = sysm.api.upload(distinct_pngs(4, seed=63))
    first = sysm.api.submit([keys[i % 4] for i in range(30)], params={**ECHO, "delay_s": 0.3}, priority="low")
    second = sysm.api.submit([keys[i % 4] for i in range(8)], params={**ECHO, "delay_s": 0.3}, priority="low")
    sysm.api.wait_item(first["id"], lambda i: i["status"] == "succeeded", 30)

    bad = sysm.api.s.patch(
        sysm.api.url(f"/api/v1/jobs/{second['id']}"), json={"priority": "urgent"}, timeout=30
    )
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "priority", bad.text
    r = sysm.api.s.patch(sysm.api.url(f"/api/v1/jobs/{second['id']}"), json={"priority": "high"}, timeout=30)
    assert r.status_code == 200 and r.json()["priority"] == "high", r.text

    done = sysm.api.wait(second["id"], timeout=60)
    first_now = sysm.api.job(first["id"])
    # The high-priority job ran ahead: the low one still has most of its items waiting.
    assert done["status"] == "succeeded"
    assert first_now["counts"]["succeeded"] <= 16, first_now["counts"]
    assert_fills_never_failed(sysm)
    updated = [e["detail"] for e in sysm.api.events(second["id"]) if e["kind"] == "job.updated"]
    assert updated == ["priority low -> high"]
    assert sysm.api.wait(first["id"], timeout=90)["status"] == "succeeded"


def test_per_job_and_per_user_limits(systems: SystemFactory) -> None:
    env = {"USER_MAX_IN_FLIGHT_PER_QUEUE": "wan_local=3"}
    sysm = systems.start("limits", workers=("control",), env=env)
    sysm.stack.start_worker("wan_local", concurrency=4)  # four lanes
    sysm.stack.wait_workers(["wan_local"])
    keys = sysm.api.upload(distinct_pngs(4, seed=64))

    capped = sysm.api.submit(keys * 3, params={**ECHO, "delay_s": 0.4}, max_concurrency=1)
    assert capped["max_concurrency"] == 1
    samples = watch(sysm.api, [capped["id"]], 2.5)
    assert max(in_flight(s[capped["id"]]) for s in samples) == 1

    # Raised while it runs: more of it runs at once, within the user's limit on the queue.
    r = sysm.api.s.patch(
        sysm.api.url(f"/api/v1/jobs/{capped['id']}"), json={"max_concurrency": None}, timeout=30
    )
    assert r.status_code == 200 and r.json()["max_concurrency"] is None
    other = sysm.api.submit(keys * 3, params={**ECHO, "delay_s": 0.4})
    samples = watch(sysm.api, [capped["id"], other["id"]], 3.0)
    totals = [sum(in_flight(job) for job in s.values()) for s in samples]
    assert max(totals) == 3, totals
    for job in (capped, other):
        assert sysm.api.wait(job["id"], timeout=90)["status"] == "succeeded"

    bad = sysm.api.post("/api/v1/jobs", json={"provider": "echo", "inputs": keys, "max_concurrency": 0})
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "max_concurrency"


def test_a_paused_queue_gets_no_new_work(systems: SystemFactory) -> None:
    sysm = systems.start("qpause", workers=("control", "wan_local"))
    keys = sysm.api.upload(distinct_pngs(4, seed=65))
    r = sysm.api.post("/api/v1/queues/wan_local/pause")
    assert r.status_code == 200 and r.json()["paused"] is True
    assert sysm.api.get("/api/v1/queues").json()["queues"]["wan_local"]["paused"] is True
    job = sysm.api.submit(keys, params={**ECHO, "delay_s": 0.1})
    time.sleep(3)
    now = sysm.api.job(job["id"])
    assert now["counts"]["pending"] == 4 and broker_depth(sysm) == 0, now["counts"]
    # The worker stays up meanwhile.
    assert sysm.api.get("/api/v1/queues").json()["queues"]["wan_local"]["workers_online"] == 1

    assert sysm.api.post("/api/v1/queues/wan_local/resume").status_code == 200
    assert sysm.api.wait(job["id"], timeout=60)["status"] == "succeeded"
    assert sysm.api.post("/api/v1/queues/nope/pause").status_code == 404


def test_a_recovered_item_runs_before_fresh_work(systems: SystemFactory) -> None:
    sysm = systems.start("recovered", workers=("control", "wan_local"))
    keys = sysm.api.upload(distinct_pngs(4, seed=66))
    job = sysm.api.submit([keys[i % 4] for i in range(40)], params={**ECHO, "delay_s": 1.0})
    sysm.api.wait_item(job["id"], lambda i: i["status"] == "running" and i["worker"], 30)
    sysm.stack.kill("wan_local")
    sysm.restart_worker("wan_local")

    # The item the killed worker was running (the database may not have heard yet which one that
    # was when it died): the one whose lease ran out and that runs again on attempt 2.
    again = sysm.api.wait_item(
        job["id"], lambda i: i["attempt"] == 2 and i["status"] in ("running", "succeeded"), 60
    )
    victim = again
    now = sysm.api.job(job["id"])
    requeued = next(
        datetime.fromisoformat(e["at"]).timestamp()
        for e in sysm.api.events(job["id"])
        if e["item_id"] == victim["id"] and e["kind"] == "item.retry"
    )
    # Once the lost attempt was given up on, at most the item then running and one the worker
    # had already started fetching went before it -- not the 30-odd fresh items still waiting.
    ahead = [
        i["index"]
        for i in now["items"]
        if i["id"] != victim["id"] and i["started_at"] and requeued <= started(i) < started(again)
    ]
    assert len(ahead) <= 2, ahead
    assert now["counts"]["pending"] >= 20, now["counts"]
    done = sysm.api.wait(job["id"], timeout=120)
    assert done["status"] == "succeeded"
    assert Counter(i["attempt"] for i in done["items"])[2] == 1


def test_redis_flushed_mid_job_republishes_only_the_window(systems: SystemFactory) -> None:
    sysm = systems.start("flush", workers=("control", "wan_local"))
    keys = sysm.api.upload(distinct_pngs(4, seed=67))
    job = sysm.api.submit([keys[i % 4] for i in range(30)], params={**ECHO, "delay_s": 0.3})
    sysm.api.wait_item(job["id"], lambda i: i["status"] == "succeeded", 30)
    sysm.redis().flushall()

    done = sysm.api.wait(job["id"], timeout=120)
    assert done["status"] == "succeeded" and done["counts"]["succeeded"] == 30
    once = Counter(
        e["item_id"] for e in sysm.api.events(job["id"]) if e["item_id"] and e["to_status"] == "succeeded"
    )
    assert len(once) == 30 and set(once.values()) == {1}
    # Whatever was queued when Redis lost its data was published again -- the window, not the job
    # (an item the worker had already taken and started needs nothing).
    republished = [e["detail"] for e in sysm.api.events(job["id"]) if e["kind"] == "job.republished"]
    assert sum(int(d.split()[0]) for d in republished) <= 4, republished
