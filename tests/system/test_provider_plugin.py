"""A provider added in one file (tests/plugins/upper.py) and one setting, through real processes.

The web app, the control worker and the provider's own worker each import the module named by
BULKGEN_PROVIDERS; its queue exists because queues are derived from the registered providers, and
a routing rule given as data moves its jobs elsewhere without the core naming either provider.
"""

from __future__ import annotations

import io
import json

import pytest
import requests
from PIL import Image, ImageOps

from tests.conftest import System, SystemFactory
from tests.plugins.upper import UpperProvider
from tests.support import distinct_pngs

# Jobs for `upper` go to `echo` while more than two of its items wait.
ROUTING_RULES = [{"from": "upper", "to": "echo", "when_no_worker": False, "when_waiting_over": 2}]


@pytest.fixture(scope="module")
def plugin_system(systems: SystemFactory) -> System:
    env = {"BULKGEN_PROVIDERS": "tests.plugins.upper", "ROUTING_RULES": json.dumps(ROUTING_RULES)}
    sysm = systems.start("plugin", workers=("control", "wan_local"), env=env)
    # The worker runs as the provider declares (a threads pool), like any API provider's.
    sysm.stack.start_worker(
        UpperProvider.queue, pool=UpperProvider.worker_pool, concurrency=UpperProvider.worker_concurrency
    )
    sysm.stack.wait_workers([UpperProvider.queue])
    return sysm


def fetch(url: str) -> bytes:
    r = requests.get(url, timeout=60)
    assert r.status_code == 200, r.text
    return r.content


def test_provider_defined_only_in_the_tests_is_offered_with_a_queue_of_its_own(plugin_system: System) -> None:
    listed = plugin_system.api.get("/api/v1/providers").json()["providers"]
    upper = next(p for p in listed if p["name"] == "upper")
    assert upper["queue"] == "upper" and upper["default_model"] == "upper-1"
    assert "upper" in plugin_system.api.get("/api/v1/queues").json()["queues"]


def test_job_on_a_provider_defined_only_in_the_tests_runs_end_to_end(plugin_system: System) -> None:
    api = plugin_system.api
    images = distinct_pngs(3, seed=71)
    keys = api.upload(images)
    job = api.submit(keys, provider="upper", prompt="hello plugin", params={"repeat": 2})
    assert job["provider"] == "upper" and job["routed_from"] is None
    done = api.wait(job["id"], timeout=120)
    assert done["status"] == "succeeded", [i["error"] for i in done["items"]]
    by_key = dict(zip(keys, images, strict=True))
    for item in done["items"]:
        assert item["queue"] == "upper"
        outputs = {o["role"]: o for o in item["outputs"]}
        assert fetch(outputs["caption"]["url"]).decode() == "HELLO PLUGIN\nHELLO PLUGIN"
        made = Image.open(io.BytesIO(fetch(outputs["image"]["url"]))).convert("RGB")
        original = Image.open(io.BytesIO(by_key[item["input_key"]])).convert("RGB")
        assert made.tobytes() == ImageOps.mirror(original).tobytes()


def test_plugin_parameters_are_refused_at_submission_naming_the_field(plugin_system: System) -> None:
    keys = plugin_system.api.upload(distinct_pngs(1, seed=72))
    r = plugin_system.api.post(
        "/api/v1/jobs", json={"provider": "upper", "inputs": keys, "prompt": "x", "params": {"repeat": 9}}
    )
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_parameter" and error["field"] == "params.repeat"


def test_routing_rule_given_as_data_sends_new_jobs_of_a_crowded_plugin_queue_elsewhere(
    plugin_system: System,
) -> None:
    api = plugin_system.api
    assert api.post("/api/v1/queues/upper/pause").status_code == 200
    try:
        # Three items wait on the paused queue: more than the rule's threshold of two.
        held = api.submit(api.upload(distinct_pngs(3, seed=73)), provider="upper", prompt="first")
        assert held["provider"] == "upper" and held["counts"]["pending"] == 3, held
        moved = api.submit(api.upload(distinct_pngs(1, seed=74)), provider="upper", prompt="second")
        assert moved["provider"] == "echo" and moved["routed_from"] == "upper", moved
        assert api.wait(moved["id"], timeout=120)["status"] == "succeeded"
        detail = [e["detail"] for e in api.events(moved["id"]) if e["kind"] == "job.fallback"]
        assert len(detail) == 1 and "the upper queue holds 3 items (threshold 2)" in detail[0], detail
    finally:
        assert api.post("/api/v1/queues/upper/resume").status_code == 200
    assert api.wait(held["id"], timeout=120)["status"] == "succeeded"
