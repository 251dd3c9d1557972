"""The report applier runs in one control worker at a time; when that worker is killed, a standby
control worker takes its lock over and the job finishes with every item recorded once."""

from __future__ import annotations

import time

from tests.conftest import System, SystemFactory
from tests.support import distinct_pngs

APPLIER_LOCK_KEY = "bulkgen:lock:report-applier"


def applier_node(sysm: System) -> str | None:
    """The worker name (`control`, `control-standby`) whose applier holds the lock, if any."""
    value = sysm.redis().get(APPLIER_LOCK_KEY)
    if value is None:
        return None
    # "<fence>|<node>@<host>/<pid>/<thread>|<taken at>"
    return value.decode().split("|")[1].split("@")[0]


def wait_for_applier(sysm: System, among: set[str], timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        node = applier_node(sysm)
        if node in among:
            return node
        time.sleep(0.2)
    raise AssertionError(f"no applier among {among}; the lock reads {applier_node(sysm)}")


def test_standby_control_worker_applies_reports_after_the_holder_is_killed(systems: SystemFactory) -> None:
    sysm = systems.start("control-failover", workers=("control", "wan_local"), env={"WORKER_DEVICE": "cpu"})
    sysm.stack.start_worker("control", name="control-standby", concurrency=1)
    sysm.stack.wait_workers(["control-standby"])
    holder = wait_for_applier(sysm, {"control", "control-standby"})
    standby = ({"control", "control-standby"} - {holder}).pop()

    keys = sysm.api.upload(distinct_pngs(20, seed=5200))
    job_id = sysm.api.submit(keys)["id"]
    sysm.api.wait_item(job_id, lambda item: item["status"] == "succeeded")
    sysm.stack.kill(holder)

    assert wait_for_applier(sysm, {standby}) == standby
    job = sysm.api.wait(job_id, timeout=180)
    assert job["status"] == "succeeded", job["counts"]
    assert job["counts"]["succeeded"] == 20
    for item in job["items"]:
        assert sysm.output_sets(job_id, item["id"]) == [str(item["attempt"])]
