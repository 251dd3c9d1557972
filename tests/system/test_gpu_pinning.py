"""GPU queues: one worker process per host, one lane per visible GPU, reported per item and per worker."""

from __future__ import annotations

from celery import Celery

from tests.conftest import SystemFactory
from tests.support import distinct_pngs


def test_one_lane_per_visible_gpu_each_on_its_device(systems: SystemFactory) -> None:
    sysm = systems.start("pinning", workers=("control",))
    # No GPU here: CUDA_VISIBLE_DEVICES names two, so the worker sizes its lanes as on a 2-GPU host.
    # The diagnostic provider never touches CUDA, so the items run on CPU all the same.
    sysm.stack.start_worker("wan_local", extra_env={"CUDA_VISIBLE_DEVICES": "3,5"})
    sysm.stack.wait_workers(["wan_local"])
    log = sysm.stack.procs["wan_local"].log()
    # Two lanes, each running one item and prefetching up to four: ten item threads.
    assert "concurrency: 10 (thread)" in log
    assert "GPU worker: 2 lane(s) on cuda:0, cuda:1" in log
    # It holds fewer messages than it has threads: per lane the running item and one prefetched.
    remote = Celery()
    remote.config_from_object("celeryconfig")
    remote.conf.broker_url = sysm.stack.redis_url
    replies = remote.control.inspect(timeout=5).stats()
    (stats,) = [v for k, v in replies.items() if k.startswith("wan_local@")]
    assert stats["prefetch_count"] == 4, stats

    keys = sysm.api.upload(distinct_pngs(4, seed=60))
    job = sysm.api.wait(
        sysm.api.submit(keys, params={"delay_s": 1.5, "queue": "wan_local"})["id"], timeout=60
    )
    assert job["status"] == "succeeded"
    devices = {i["device"].split(":")[0] for i in job["items"]}
    assert devices == {"GPU 3", "GPU 5"}, devices
    workers = {i["worker"] for i in job["items"]}
    assert len(workers) == 2, workers  # the two lanes of the one worker process
    queues = sysm.api.get("/api/v1/queues").json()["queues"]
    (worker,) = queues["wan_local"]["workers"]
    assert sorted(d.split(":")[0] for d in queues["wan_local"]["devices"][worker]) == ["GPU 3", "GPU 5"]
    assert [lane["state"] for lane in queues["wan_local"]["lanes"][worker]] == ["ready", "ready"]
