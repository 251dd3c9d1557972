"""Ops surfaces: Flower with the project's config, the OpenAPI document, the admin CLI."""

from __future__ import annotations

import time

import pytest
import requests

from tests.conftest import System
from tests.support import distinct_pngs

CONTRACT_PATHS = [
    "/uploads",
    "/assets",
    "/jobs",
    "/jobs/{job_id}",
    "/jobs/{job_id}/cancel",
    "/jobs/{job_id}/retry",
    "/items/{item_id}/retry",
    "/jobs/{job_id}/download",
    "/stats",
    "/queues",
    "/providers",
]


@pytest.fixture(scope="module")
def flower(system: System) -> str:
    system.stack.start_flower("ops", "flower-secret")
    return f"http://127.0.0.1:{system.stack.flower_port}"


def test_flower_requires_auth_and_shows_queues_and_workers(system: System, flower: str) -> None:
    assert requests.get(f"{flower}/api/workers", timeout=10).status_code == 401
    assert requests.get(f"{flower}/api/workers", auth=("ops", "wrong"), timeout=10).status_code == 401
    # Put work on the queues so Flower has something to count, then read its API.
    keys = system.api.upload(distinct_pngs(3, seed=30))
    system.api.wait(system.api.submit(keys, params={"queue": "spread"})["id"])
    deadline = time.monotonic() + 30
    workers: dict = {}
    while time.monotonic() < deadline:
        workers = requests.get(
            f"{flower}/api/workers", params={"refresh": "1"}, auth=("ops", "flower-secret"), timeout=30
        ).json()
        if len(workers) >= 4:
            break
        time.sleep(1)
    served = {q["name"] for info in workers.values() for q in info.get("active_queues", [])}
    assert served == {"wan_local", "runway", "sam3", "control"}, workers.keys()
    lengths = requests.get(f"{flower}/api/queues/length", auth=("ops", "flower-secret"), timeout=30).json()
    assert {q["name"] for q in lengths["active_queues"]} == {"wan_local", "runway", "sam3", "control"}


def test_openapi_documents_the_contract(system: System) -> None:
    spec = system.api.get("/api/v1/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    for path in CONTRACT_PATHS:
        assert path in spec["paths"], path
    schemas = spec["components"]["schemas"]
    job = schemas["Job"]["properties"]
    assert {"id", "status", "provider", "model", "progress", "counts", "waiting_reason", "total"} <= set(job)
    # A job read by id also carries a page of its items.
    assert "items" in schemas["JobWithItems"]["properties"]
    assert "items" not in job


def test_cli_creates_users_and_tokens(system: System) -> None:
    out = system.stack.flask("create-user", "Second@Example.com", "--password", "pw-123456").stdout
    assert "second@example.com" in out
    token = system.stack.flask("create-token", "second@example.com").stdout.strip().splitlines()[-1]
    r = requests.get(
        f"{system.base_url}/api/v1/jobs", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert r.status_code == 200
    import subprocess

    with pytest.raises(subprocess.CalledProcessError) as err:
        system.stack.flask("create-token", "nobody@example.com")
    assert "no user" in err.value.stderr


def test_readyz_follows_the_broker(systems) -> None:
    sysm = systems.start("readyz", workers=("control",))
    url = f"{sysm.base_url}/readyz"
    ok = requests.get(url, timeout=10)
    assert ok.status_code == 200 and ok.json()["checks"] == {
        "database": "ok",
        "broker": "ok",
        "storage": "ok",
    }
    sysm.stack.stop("redis")
    down = requests.get(url, timeout=30)
    assert down.status_code == 503 and down.json()["checks"]["broker"].startswith("unreachable")
    sysm.stack.start_redis()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and requests.get(url, timeout=30).status_code != 200:
        time.sleep(0.5)
    assert requests.get(url, timeout=30).status_code == 200
