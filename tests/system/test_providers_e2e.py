"""Each real provider inside a real Celery worker process on CPU, end to end through the API."""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Iterator

import imageio.v3 as iio
import numpy as np
import pytest
import requests
from PIL import Image

from providers.runway_sim import RunwaySimServer
from tests.conftest import System, SystemFactory
from tests.support import png_bytes

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def runway_sim() -> Iterator[RunwaySimServer]:
    with RunwaySimServer(duration_s=1.0, pending_s=0.2) as sim:
        yield sim


@pytest.fixture(scope="module")
def gpu_system(systems: SystemFactory, runway_sim: RunwaySimServer) -> System:
    env = {"RUNWAY_BASE_URL": runway_sim.base_url, "RUNWAY_POLL_INTERVAL_S": "0.2", "PRELOAD_MODELS": "1"}
    return systems.start("providers", env=env)


def fetch(url: str) -> bytes:
    r = requests.get(url, timeout=60)
    assert r.status_code == 200, r.text
    return r.content


def outputs_by_role(item: dict) -> dict[str, dict]:
    return {o["role"]: o for o in item["outputs"]}


def test_wan_job_produces_playable_mp4s(gpu_system: System) -> None:
    api = gpu_system.api
    keys = api.upload([png_bytes(80, 48, (200, 40, 40)), png_bytes(40, 64, (40, 200, 40))])
    job = api.submit(
        keys, provider="wan_local", prompt="a cat walks", params={"num_frames": 13, "steps": 2, "seed": 7}
    )
    done = api.wait(job["id"], timeout=300)
    assert done["status"] == "succeeded", [i["error"] for i in done["items"]]
    for item in done["items"]:
        outs = outputs_by_role(item)
        assert outs["video"]["content_type"] == "video/mp4"
        frames = iio.imread(fetch(outs["video"]["url"]), extension=".mp4")
        assert frames.shape[0] == 13
        poster = Image.open(io.BytesIO(fetch(outs["poster"]["url"])))
        assert poster.size == (frames.shape[2], frames.shape[1])
    # Loaded once per worker process: both items report the same single load.
    assert [i["meta"]["loads"] for i in done["items"]] == [1, 1]
    log = gpu_system.stack.procs["wan_local"].log()
    assert log.count("loaded wan model") == 1


def test_wan_a_prompt_and_parameters_per_photo(gpu_system: System) -> None:
    api = gpu_system.api
    keys = api.upload([png_bytes(48, 48, (200, 40, 40)), png_bytes(48, 48, (40, 40, 200))])
    bad = api.post(
        "/api/v1/jobs",
        json={"provider": "wan_local", "inputs": [keys[0], {"key": keys[1], "params": {"num_frames": 10}}]},
    )
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "inputs[1].params.num_frames", bad.text
    job = api.submit(
        [
            {"key": keys[0], "prompt": "she laughs and turns to the camera"},
            {"key": keys[1], "prompt": "the dog runs toward us", "seed": 11, "params": {"num_frames": 9}},
        ],
        provider="wan_local",
        prompt="a slow pan",
        params={"num_frames": 5, "steps": 1, "seed": 7},
    )
    done = api.wait(job["id"], timeout=300)
    assert done["status"] == "succeeded", [i["error"] for i in done["items"]]
    items = sorted(done["items"], key=lambda i: i["index"])
    # What each item records having run with: its own prompt, seed and frames.
    assert [i["prompt"] for i in items] == ["she laughs and turns to the camera", "the dog runs toward us"]
    assert [i["meta"]["prompt"] for i in items] == [i["prompt"] for i in items]
    assert [(i["meta"]["seed"], i["meta"]["num_frames"]) for i in items] == [(7, 5), (11, 9)]
    assert items[1]["params"] == {"seed": 11, "num_frames": 9}


def test_cancel_during_wan_run_stops_within_a_step(gpu_system: System) -> None:
    api = gpu_system.api
    keys = api.upload([png_bytes(64, 64, (1, 2, 250))])
    job = api.submit(keys, provider="wan_local", params={"num_frames": 81, "steps": 100})
    api.wait_item(job["id"], lambda i: i["status"] == "running" and i["progress"] > 0, timeout=120)
    api.post(f"/api/v1/jobs/{job['id']}/cancel")
    done = api.wait(job["id"], timeout=30)
    item = done["items"][0]
    assert done["status"] == "cancelled" and item["status"] == "cancelled"
    assert item["outputs"] == []
    assert gpu_system.output_sets(job["id"], item["id"]) == []
    # The worker is free again well before 100 steps could have run: the next item starts at once.
    follow = api.submit(api.upload([png_bytes(16, 16, (9, 9, 9))]), provider="wan_local", params={"steps": 1})
    assert api.wait(follow["id"], timeout=60)["status"] == "succeeded"
    log = gpu_system.stack.procs["wan_local"].log()
    assert log.count("loaded wan model") == 1
    # It stopped between two denoising steps, far from the end.
    stopped = re.search(rf"item {item['id']} attempt 1 stopped by cancel at step (\d+)/100", log)
    assert stopped and int(stopped.group(1)) < 100, log[-2000:]


def test_sam3_two_concepts_masks_and_instances_line_up(gpu_system: System) -> None:
    api = gpu_system.api
    keys = api.upload([png_bytes(96, 72, (120, 90, 30))])
    job = api.submit(
        keys, provider="sam3", prompts=["cat", "dog"], params={"score_threshold": 0.0, "mask_threshold": 0.5}
    )
    done = api.wait(job["id"], timeout=180)
    assert done["status"] == "succeeded", done["items"][0]["error"]
    item = done["items"][0]
    outs = outputs_by_role(item)
    report = json.loads(
        fetch(next(o for r, o in outs.items() if o["content_type"] == "application/json")["url"])
    )
    masks = {r: o for r, o in outs.items() if r.startswith("mask")}
    assert len(masks) == 2
    for mask_out in masks.values():
        mask = np.array(Image.open(io.BytesIO(fetch(mask_out["url"]))))
        assert mask.shape[:2] == (72, 96)
    instances = report["instances"]
    assert {i["concept"] for i in instances} <= {"cat", "dog"}
    for concept, role in (("cat", "mask_cat"), ("dog", "mask_dog")):
        mask = np.array(Image.open(io.BytesIO(fetch(masks[role]["url"]))))
        mine = [i for i in instances if i["concept"] == concept]
        assert mine, f"no instance of {concept!r} at score threshold 0: {instances}"
        # Overlapping instances may hide one another; every pixel label belongs to an instance
        # and each instance's recorded area is exactly its pixels in the mask.
        assert {int(v) for v in np.unique(mask) if v} <= {i["label"] for i in mine}
        for inst in mine:
            assert int((mask == inst["label"]).sum()) == inst["area"]
            assert len(inst["box"]) == 4 and 0 <= inst["score"] <= 1
    assert report["inference_ms"] > 0
    assert any(o["content_type"] == "image/png" and "mask" not in r for r, o in outs.items())


def test_sam3_concepts_per_photo(gpu_system: System) -> None:
    api = gpu_system.api
    keys = api.upload([png_bytes(64, 48, (120, 90, 30)), png_bytes(48, 64, (30, 90, 120))])
    job = api.submit(
        [{"key": keys[0], "prompts": ["cat"]}, {"key": keys[1], "prompts": ["dog", "tree"]}],
        provider="sam3",
        params={"score_threshold": 0.0},
    )
    done = api.wait(job["id"], timeout=180)
    assert done["status"] == "succeeded", [i["error"] for i in done["items"]]
    items = sorted(done["items"], key=lambda i: i["index"])
    assert [i["prompts"] for i in items] == [["cat"], ["dog", "tree"]]
    assert [i["meta"]["prompts"] for i in items] == [["cat"], ["dog", "tree"]]
    assert [sorted(r for r in outputs_by_role(i) if r.startswith("mask")) for i in items] == [
        ["mask_cat"],
        ["mask_dog", "mask_tree"],
    ]


def test_runway_job_downloads_the_video(gpu_system: System, runway_sim: RunwaySimServer) -> None:
    api = gpu_system.api
    keys = api.upload([png_bytes(64, 36, (10, 10, 200))])
    job = api.submit(
        keys,
        provider="runway",
        model="gen4_turbo",
        prompt="waves",
        params={"ratio": "1280:720", "duration": 5},
    )
    done = api.wait(job["id"], timeout=120)
    assert done["status"] == "succeeded", done["items"][0]["error"]
    item = done["items"][0]
    video = fetch(outputs_by_role(item)["video"]["url"])
    assert iio.imread(video, extension=".mp4").shape[0] > 1
    assert item["remote_id"] in runway_sim.stats()["tasks"]
    assert item["cost_usd"] and item["cost_usd"] > 0


def test_runway_failure_code_fails_the_item_with_the_message(
    gpu_system: System, runway_sim: RunwaySimServer
) -> None:
    runway_sim.configure(fail_code="SAFETY.INPUT.TEXT", fail_message="The prompt was flagged.")
    try:
        keys = gpu_system.api.upload([png_bytes(64, 36, (11, 10, 200))])
        job = gpu_system.api.submit(keys, provider="runway", model="gen4_turbo", prompt="flag me")
        done = gpu_system.api.wait(job["id"], timeout=120)
    finally:
        runway_sim.configure(fail_code=None)
    item = done["items"][0]
    assert item["status"] == "failed" and item["attempt"] == 1
    assert "flagged" in item["error"] and "SAFETY" in item["error"] + (item["error_code"] or "")


def test_runway_429_and_throttled_wait_then_succeed_with_one_task(
    gpu_system: System, runway_sim: RunwaySimServer
) -> None:
    runway_sim.configure(fail_429=2, fault_methods=["POST"], throttled_s=2.0)
    try:
        keys = gpu_system.api.upload([png_bytes(64, 36, (12, 10, 200))])
        job = gpu_system.api.submit(keys, provider="runway", model="veo3.1", prompt="one task only 429")
        done = gpu_system.api.wait(job["id"], timeout=120)
    finally:
        runway_sim.configure(fail_429=0, throttled_s=0.0, fault_methods=None)
    assert done["status"] == "succeeded"
    tasks = [t for t in runway_sim.stats()["tasks"].values() if t["promptText"] == "one task only 429"]
    assert len(tasks) == 1


def test_cancel_while_waiting_at_runway_cancels_the_remote_task(
    gpu_system: System, runway_sim: RunwaySimServer
) -> None:
    runway_sim.configure(throttled_s=60.0)
    try:
        keys = gpu_system.api.upload([png_bytes(64, 36, (13, 10, 200))])
        job = gpu_system.api.submit(keys, provider="runway", model="gen4_turbo", prompt="cancel me at runway")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            tasks = [
                t for t in runway_sim.stats()["tasks"].values() if t["promptText"] == "cancel me at runway"
            ]
            if tasks:
                break
            time.sleep(0.2)
        gpu_system.api.post(f"/api/v1/jobs/{job['id']}/cancel")
        done = gpu_system.api.wait(job["id"], timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            tasks = [
                t for t in runway_sim.stats()["tasks"].values() if t["promptText"] == "cancel me at runway"
            ]
            if tasks and tasks[0]["status"] == "CANCELLED" or tasks[0]["deleted"]:
                break
            time.sleep(0.2)
    finally:
        runway_sim.configure(throttled_s=0.0)
    assert done["status"] == "cancelled"
    assert len(tasks) == 1 and (tasks[0]["status"] == "CANCELLED" or tasks[0]["deleted"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"provider": "wan_local", "params": {"num_frames": 10}}, "params.num_frames"),
        ({"provider": "runway", "model": "gen4_turbo", "params": {"ratio": "1080:1920"}}, "params.ratio"),
        ({"provider": "runway", "model": "veo3.1", "params": {"duration": 5}}, "params.duration"),
        ({"provider": "sam3", "prompts": []}, "prompts"),
        ({"provider": "sam3", "prompts": ["  "]}, "prompts"),
        ({"provider": "runway", "model": "gen9"}, "model"),
        ({"provider": "wan_local", "model": "wan_xl"}, "model"),
    ],
)
def test_invalid_provider_params_rejected_at_submission(system: System, body: dict, field: str) -> None:
    key = system.api.upload([png_bytes(20, 20, (5, 5, 5))])[0]
    r = system.api.post("/api/v1/jobs", json={**body, "inputs": [key]})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["field"] == field
