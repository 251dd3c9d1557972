"""The Workers page's listing (app/services/workers.py `build`): a pure function of the announcements."""

from __future__ import annotations

from typing import Any

from app.services.workers import GONE_AFTER_S, ago, build, lost_after_s

NOW = 1_000_000.0
BEAT = 1.0


def gpu_lane(node: str, pid: int, index: int, **kw: Any) -> tuple[str, dict[str, Any]]:
    entry = {
        "device": f"GPU {index}: NVIDIA H100 80GB HBM3, 81559 MiB",
        "queues": ["wan_local"],
        "node": node,
        "pid": pid,
        "lane": index,
        "worker": f"{node}/{pid}#{index}",
        "state": "ready",
        "busy": False,
        "models": ["wan: Wan-AI/Wan2.2-TI2V-5B-Diffusers"],
        "current_item": None,
        "at": NOW - 0.5,
        **kw,
    }
    return f"{node}/{pid}#{index}", entry


def consumer(node: str, pid: int, queues: list[str], **kw: Any) -> tuple[str, dict[str, Any]]:
    return f"{node}/{pid}", {"queues": queues, "slots": 2, "node": node, "pid": pid, "at": NOW - 0.2, **kw}


def test_a_gpu_process_lists_one_row_per_lane_with_its_item_model_and_counts() -> None:
    node = "wan_local@gpu-7"
    devices = dict(
        [
            gpu_lane(node, 41, 1),
            gpu_lane(
                node, 41, 0, busy=True, current_item="item-a", current_job="job-1", current_since=NOW - 12
            ),
        ]
    )
    consumers = dict([consumer(node, 41, ["wan_local"], kind="gpu", state="ready", lanes=2)])
    counts = {f"{node}/41#0": {"succeeded": 5, "failed": 1}, f"{node}/41#1": {"succeeded": 3}}
    listing = build(consumers, devices, counts, NOW, BEAT)
    [process] = listing.processes
    assert (process.node, process.host, process.pid, process.kind) == (node, "gpu-7", 41, "gpu")
    assert process.state == "busy" and (process.done, process.failed) == (8, 1)
    assert [lane.index for lane in process.lanes] == [0, 1]
    busy, idle = process.lanes
    assert busy.state == "busy" and idle.state == "ready"
    assert [(r.item_id, r.job_id, r.for_s) for r in busy.running] == [("item-a", "job-1", 12.0)]
    assert busy.models == ["wan: Wan-AI/Wan2.2-TI2V-5B-Diffusers"] and busy.device.startswith("GPU 0: NVIDIA")
    assert (busy.done, busy.failed, idle.done, idle.failed) == (5, 1, 3, 0)
    assert listing.expired == ([], [])


def test_a_one_lane_worker_counts_the_items_recorded_under_its_process_name() -> None:
    # Items of a one-lane process record "node/pid" as their worker (tasks/lanes.py Lane.worker).
    key, entry = gpu_lane("sam3@h", 7, 0, device="cpu (2 cores)")
    del entry["worker"]  # announced by an older worker
    listing = build({}, {key: entry}, {"sam3@h/7": {"succeeded": 2, "failed": 4}}, NOW, BEAT)
    [lane] = listing.processes[0].lanes
    assert (lane.worker, lane.done, lane.failed, lane.device) == ("sam3@h/7", 2, 4, "cpu (2 cores)")


def test_an_api_worker_shows_its_running_items_and_the_control_worker_is_listed() -> None:
    running = [{"item": "i1", "job": "j1", "since": NOW - 3}, {"item": "i2", "job": "j2", "since": NOW - 1}]
    consumers = dict(
        [
            consumer("runway@main", 9, ["runway"], kind="api", device="API", state="busy", current=running),
            consumer("control@main", 8, ["control"], kind="control", device="CPU", state="ready", slots=0),
        ]
    )
    listing = build(consumers, {}, {"runway@main/9": {"succeeded": 11}}, NOW, BEAT)
    control, runway = listing.processes  # by host, then queue
    assert (control.kind, control.state, control.lanes[0].device) == ("control", "ready", "CPU")
    assert (runway.kind, runway.state, runway.done) == ("api", "busy", 11)
    [lane] = runway.lanes
    assert lane.device == "API" and lane.state == "busy"
    assert [(r.item_id, r.job_id, r.for_s) for r in lane.running] == [("i1", "j1", 3.0), ("i2", "j2", 1.0)]


def test_a_draining_process_shows_draining_with_the_item_it_finishes() -> None:
    devices = dict([gpu_lane("w@h", 5, 0, state="draining", busy=True, current_item="x", current_since=NOW)])
    consumers = dict([consumer("w@h", 5, ["wan_local"], kind="gpu", state="draining")])
    [process] = build(consumers, devices, {}, NOW, BEAT).processes
    assert process.state == "draining"
    assert process.lanes[0].state == "draining" and process.lanes[0].running[0].item_id == "x"
    # A lane still loading says so, even while its process drains.
    devices = dict([gpu_lane("w@h", 5, 0, state="loading")])
    assert build(consumers, devices, {}, NOW, BEAT).processes[0].lanes[0].state == "loading"


def test_silent_workers_are_lost_then_gone() -> None:
    lost_at = NOW - lost_after_s(BEAT) - 1
    gone_at = NOW - GONE_AFTER_S - 1
    devices = dict([gpu_lane("a@h", 1, 0, at=lost_at), gpu_lane("b@h", 2, 0, at=gone_at)])
    consumers = dict(
        [
            consumer("a@h", 1, ["wan_local"], kind="gpu", at=lost_at),
            consumer("b@h", 2, ["wan_local"], kind="gpu", at=gone_at),
            consumer("c@h", 3, ["runway"], kind="api", at=NOW - 1),
        ]
    )
    listing = build(consumers, devices, {}, NOW, BEAT)
    # By host, then queue: runway before wan_local.
    assert [(p.node, p.state) for p in listing.processes] == [("c@h", "ready"), ("a@h", "lost")]
    assert listing.processes[1].lanes[0].state == "lost"
    assert listing.expired == (["b@h/2"], ["b@h/2#0"])
    # An entry stamped ahead of this host's clock (another host's clock runs fast) is fresh.
    ahead = dict([consumer("e@h", 5, ["runway"], kind="api", at=NOW + 30)])
    assert [(p.node, p.state) for p in build(ahead, {}, {}, NOW, BEAT).processes] == [("e@h", "ready")]
    # A fresh lane keeps its process listed even when the slots entry is missing or broken.
    listing = build({"d@h/4": {}}, dict([gpu_lane("d@h", 4, 0)]), {}, NOW, BEAT)
    assert [(p.node, p.state) for p in listing.processes] == [("d@h", "ready")]
    assert listing.expired == (["d@h/4"], [])


def test_lost_after_a_few_heartbeats_and_durations_in_words() -> None:
    assert lost_after_s(1.0) == 10.0 and lost_after_s(15.0) == 45.0
    assert [ago(x) for x in (None, 0.4, 3, 59.9, 61, 3599, 3600 + 5 * 60)] == [
        "–",
        "0 s",
        "3 s",
        "59 s",
        "1 min",
        "59 min",
        "1 h 5 min",
    ]
