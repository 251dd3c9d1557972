"""GPU queues: one process per visible GPU, each pinned to its own device, reported per item."""

from __future__ import annotations

from tests.conftest import SystemFactory
from tests.support import distinct_pngs


def test_one_process_per_visible_gpu_each_pinned(systems: SystemFactory) -> None:
    sysm = systems.start("pinning", workers=("control",))
    # No GPU here: CUDA_VISIBLE_DEVICES names two, so the worker sizes and pins as on a 2-GPU host.
    # The diagnostic provider never touches CUDA, so the items run on CPU all the same.
    sysm.stack.start_worker("wan_local", extra_env={"CUDA_VISIBLE_DEVICES": "3,5"})
    sysm.stack.wait_workers(["wan_local"])
    log = sysm.stack.procs["wan_local"].log()
    assert "concurrency: 2 (prefork)" in log

    keys = sysm.api.upload(distinct_pngs(4, seed=60))
    job = sysm.api.wait(
        sysm.api.submit(keys, params={"delay_s": 1.5, "queue": "wan_local"})["id"], timeout=60
    )
    assert job["status"] == "succeeded"
    devices = {i["device"].split(":")[0] for i in job["items"]}
    assert devices == {"GPU 3", "GPU 5"}, devices
    workers = {i["worker"] for i in job["items"]}
    assert len(workers) == 2  # two processes (pids) of the one worker
    # Pinning happens in the children after fork; the parent never chose a device.
    log = sysm.stack.procs["wan_local"].log()
    assert "MainProcess] worker pinned" not in log
    assert log.count("pinned to cuda:0") == 2
    queues = sysm.api.get("/api/v1/queues").json()["queues"]
    (worker,) = queues["wan_local"]["workers"]
    assert sorted(d.split(":")[0] for d in queues["wan_local"]["devices"][worker]) == ["GPU 3", "GPU 5"]
