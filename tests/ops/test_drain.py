"""Draining a GPU host: SIGTERM is Celery's warm shutdown.

The running item finishes on its first attempt, the worker takes nothing new and exits 0, the item
it had prefetched goes back to the queue, the rest waits (in the broker's window or pending in
Postgres; attempt 1, no worker) for whoever comes next, and a new worker completes it.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest

from bulkgen_stack.processes import Proc
from tests.conftest import System, SystemFactory, dump_logs
from tests.ops.helpers import wait_for_epoch
from tests.support import distinct_pngs

DELAY_S = 1.5


@pytest.fixture(scope="module")
def drained(systems: SystemFactory) -> System:
    # WORKER_DEVICE: one process per worker even on a GPU machine, so exactly one item runs.
    sysm = systems.start("ops-drain", workers=("control", "wan_local"), env={"WORKER_DEVICE": "cpu"})
    wait_for_epoch(sysm)
    return sysm


def drain(sysm: System, worker: str, seed: int, send: Callable[[Proc], None], successor: str) -> None:
    api = sysm.api
    keys = api.upload(distinct_pngs(4, seed=seed))
    job = api.submit(keys, params={"delay_s": DELAY_S, "queue": "wan_local"})
    running = api.wait_item(job["id"], lambda i: i["status"] == "running" and i["worker"], timeout=30)
    proc = sysm.stack.procs[worker]

    send(proc)

    try:
        returncode = proc.popen.wait(timeout=30)
    except Exception:
        raise AssertionError(
            "worker still running 30 s after SIGTERM\n" + dump_logs(sysm, (worker,))
        ) from None
    assert returncode == 0, dump_logs(sysm, (worker,))
    item = api.wait_item(job["id"], lambda i: i["id"] == running["id"] and i["status"] != "running", 20)
    assert (item["status"], item["attempt"]) == ("succeeded", 1), (item, dump_logs(sysm, (worker, "control")))
    assert sysm.output_sets(job["id"], running["id"]) == ["1"]
    # Nothing else moved: a few reconciler rounds later the rest still waits for a worker.
    rest = [i for i in api.job(job["id"])["items"] if i["id"] != running["id"]]
    waiting = [(i["status"] in ("queued", "pending"), i["attempt"], i["worker"]) for i in rest]
    assert waiting == [(True, 1, None)] * 3, rest

    sysm.stack.start_worker("wan_local", name=successor)
    sysm.stack.wait_workers([successor])
    done = api.wait(job["id"], timeout=60)
    assert done["status"] == "succeeded"
    assert [i["attempt"] for i in done["items"]] == [1, 1, 1, 1]
    assert all(i["worker"].startswith(successor + "@") for i in done["items"] if i["id"] != running["id"])


def test_sigterm_to_the_main_process_finishes_the_item_and_takes_no_new_one(drained: System) -> None:
    # What `docker stop` (exec-form ENTRYPOINT: celery is PID 1) and `kill <pid>` do.
    drain(drained, "wan_local", 61, lambda proc: proc.signal(signal.SIGTERM, group=False), "wan_local_2")
