"""GPU workers with real load times: they come back after every crash, and a model that cannot
load takes nothing from the queue.

The diagnostic provider's model load is made as slow as a real one (ECHO_LOAD_DELAY_S) or
failing (ECHO_LOAD_ERROR); everything else is the normal worker path.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import System, SystemFactory, dump_logs
from tests.support import distinct_pngs

SLOW_LOAD_S = 12.0


@pytest.fixture(scope="module")
def sysm(systems: SystemFactory) -> System:
    # Attempts to spare: an item lost with a killed worker runs again first (a retry goes ahead of
    # fresh work), so the next kill may well hit the same item.
    return systems.start("startup", workers=("control",), env={"MAX_ATTEMPTS": "5"})


def lanes_of(sysm: System, queue: str, worker: str) -> list[dict[str, Any]]:
    queues = sysm.api.get("/api/v1/queues").json()["queues"]
    names = [w for w in queues[queue]["workers"] if w.startswith(worker + "@")]
    return queues[queue]["lanes"][names[0]] if names else []


def wait_until(what: str, check: Callable[[], Any], timeout: float, logs: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what}: not seen within {timeout} s\n{logs()}")


def test_slow_loading_worker_comes_back_after_each_kill(sysm: System) -> None:
    name = "slow_sam3"
    sysm.stack.start_worker(
        "sam3", name=name, extra_env={"ECHO_LOAD_DELAY_S": str(SLOW_LOAD_S), "PRELOAD_MODELS": "1"}
    )

    def logs() -> str:
        return dump_logs(sysm, (name, "control"))

    # Up and answering while the model loads, but taking nothing yet.
    wait_until("loading", lambda: [x["state"] for x in lanes_of(sysm, "sam3", name)] == ["loading"], 30, logs)
    wait_until("ready", lambda: [x["state"] for x in lanes_of(sysm, "sam3", name)] == ["ready"], 60, logs)

    keys = sysm.api.upload(distinct_pngs(10, seed=70))
    job = sysm.api.submit(keys, params={"delay_s": 1.0, "queue": "sam3"})
    for kill in range(3):
        proc = sysm.stack.procs[name]
        # An item started by this very process (items of a killed one may still show running).
        wait_until(
            f"an item running in process {proc.pid} before kill {kill + 1}",
            lambda p=proc: any(
                i["status"] == "running" and (i["worker"] or "").endswith(f"/{p.pid}")
                for i in sysm.api.job(job["id"])["items"]
            ),
            120,
            logs,
        )
        proc.signal(signal.SIGKILL)  # the whole host process, as an OOM kill or a crash would
        # The supervisor starts a replacement, which loads for as long as the first one did.
        wait_until("a replacement process", lambda p=proc: sysm.stack.procs[name].pid != p.pid, 30, logs)
        wait_until(
            "the replacement loading",
            lambda: [x["state"] for x in lanes_of(sysm, "sam3", name)] in (["loading"], ["ready"]),
            30,
            logs,
        )

    done = sysm.api.wait(job["id"], timeout=240)
    log = sysm.stack.procs[name].log()
    sysm.stack.stop(name)
    assert done["status"] == "succeeded", (done["counts"], logs())
    assert "Timed out waiting for UP message" not in log
    # Four processes, each loaded its model once: the first and three replacements.
    assert log.count("lane 0 on cpu is ready") == 4, log[-3000:]
    # Each kill cost at most the attempt of the item it was running; prefetched items went back
    # without spending one.
    extra_attempts = sum(i["attempt"] - 1 for i in done["items"])
    assert extra_attempts <= 3, [(i["id"][:8], i["attempt"]) for i in done["items"]]
    assert all(sysm.output_sets(job["id"], i["id"]) == [str(i["attempt"])] for i in done["items"])


@pytest.mark.parametrize("preload", ["1", "0"], ids=["at-start", "on-first-item"])
def test_model_that_cannot_load_leaves_its_items_to_a_healthy_worker(sysm: System, preload: str) -> None:
    broken, healthy = f"broken_{preload}", f"healthy_{preload}"
    sysm.stack.start_worker(
        "sam3",
        name=broken,
        extra_env={"ECHO_LOAD_ERROR": "weights file is truncated", "PRELOAD_MODELS": preload},
    )
    sysm.stack.wait_workers([broken])

    def logs() -> str:
        return dump_logs(sysm, (broken, healthy, "control"))

    if preload == "1":
        lanes = wait_until(
            "broken", lambda: [x for x in lanes_of(sysm, "sam3", broken) if x["state"] == "broken"], 30, logs
        )
        assert "weights file is truncated" in lanes[0]["error"]
    keys = sysm.api.upload(distinct_pngs(6, seed=80 + int(preload)))
    job = sysm.api.submit(keys, params={"delay_s": 0.2, "queue": "sam3"})
    if preload == "0":
        # The first item it takes makes it try the load: the lane breaks and gives the item back.
        wait_until(
            "broken", lambda: [x for x in lanes_of(sysm, "sam3", broken) if x["state"] == "broken"], 60, logs
        )
    sysm.stack.start_worker("sam3", name=healthy)
    done = sysm.api.wait(job["id"], timeout=120)
    sysm.stack.stop(healthy)
    sysm.stack.stop(broken)

    assert done["status"] == "succeeded", (done["counts"], logs())
    assert all(i["worker"].startswith(healthy + "@") for i in done["items"]), done["items"]
    # Not one attempt spent on the broken worker.
    assert [i["attempt"] for i in done["items"]] == [1] * 6
    events = sysm.api.events(job["id"])
    assert not [e for e in events if e.get("worker", "") and e["worker"].startswith(broken + "@")], events
