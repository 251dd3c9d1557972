"""CUDA out of memory on a GPU worker: the item is retried, and a process that keeps running out of
memory exits so that its supervisor starts a fresh one (a fresh CUDA context).

The diagnostic provider raises torch's own `OutOfMemoryError` from inside its run, as CUDA does;
the worker path from there on is the real one.
"""

from __future__ import annotations

import pytest

from tests.conftest import System, SystemFactory, dump_logs
from tests.support import distinct_pngs


@pytest.fixture(scope="module")
def sysm(systems: SystemFactory) -> System:
    return systems.start(
        "oom", workers=("control", "sam3"), env={"WORKER_MAX_CONSECUTIVE_OOM": "3", "WORKER_DEVICE": "cpu"}
    )


def test_out_of_memory_is_retried_on_a_new_attempt(sysm: System) -> None:
    keys = sysm.api.upload(distinct_pngs(1, seed=90))
    job = sysm.api.wait(
        sysm.api.submit(keys, params={"queue": "sam3", "fail": "oom_first_attempt"})["id"], timeout=60
    )
    (item,) = job["items"]
    assert (job["status"], item["attempt"]) == ("succeeded", 2), (item, dump_logs(sysm, ("sam3",)))
    # The first attempt's failure is on record, with the error the provider raised.
    events = sysm.api.events(job["id"])
    retries = [e["detail"] for e in events if e["kind"] == "item.retry"]
    assert len(retries) == 1 and retries[0].startswith("attempt 1 failed: OutOfMemoryError"), events
    assert sysm.output_sets(job["id"], item["id"]) == ["2"]


def test_repeated_out_of_memory_restarts_the_worker_process(sysm: System) -> None:
    proc = sysm.stack.procs["sam3"]
    keys = sysm.api.upload(distinct_pngs(3, seed=91))
    job = sysm.api.wait(sysm.api.submit(keys, params={"queue": "sam3", "fail": "oom"})["id"], timeout=120)
    # Every attempt ran out of memory: the items failed for good, and said why.
    assert job["status"] == "failed"
    assert {i["error_code"] for i in job["items"]} == {"oom"}, job["items"]
    # The process gave up after three in a row; the supervisor started a new one, which works.
    log = proc.log()
    assert "exiting for a fresh process: 3 out-of-memory failures in a row" in log, log[-3000:]
    assert sysm.stack.procs["sam3"].pid != proc.pid
    sysm.stack.wait_workers(["sam3"])
    healthy = sysm.api.upload(distinct_pngs(2, seed=92))
    done = sysm.api.wait(sysm.api.submit(healthy, params={"queue": "sam3"})["id"], timeout=60)
    assert done["status"] == "succeeded", dump_logs(sysm, ("sam3",))
