"""The job pipeline end to end, through the API, with real worker processes."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import requests

from tests.conftest import System
from tests.support import Api, distinct_pngs


def test_fifty_items_spread_over_queues(system: System, api: Api) -> None:
    keys = api.upload(distinct_pngs(50, seed=1))
    job = api.submit(keys, params={"queue": "spread", "delay_s": 0.05})
    assert job["status"] in ("queued", "running")
    assert job["total"] == 50

    done = api.wait(job["id"], timeout=180)

    assert done["status"] == "succeeded"
    assert done["counts"] == {
        "pending": 0,
        "queued": 0,
        "running": 0,
        "succeeded": 50,
        "failed": 0,
        "cancelled": 0,
    }
    assert done["progress"] == 1.0
    assert done["finished_at"] and done["started_at"]
    queues = Counter(i["queue"] for i in done["items"])
    # Dealt round-robin over the registered queues, in registration order.
    assert set(queues) == {"wan_local", "runway", "sam3"}
    assert sorted(queues.values()) == [16, 17, 17]
    workers = {i["worker"].split("@")[0] for i in done["items"]}
    assert workers == {"wan_local", "runway", "sam3"}
    for item in done["items"]:
        assert item["status"] == "succeeded" and item["attempt"] == 1
        assert len(item["outputs"]) == 1
        assert system.output_sets(job["id"], item["id"]) == ["1"]
        assert item["outputs"][0]["key"].startswith(f"outputs/{job['id']}/{item['id']}/1/")
    events = api.events(job["id"])
    succeeded = Counter(e["item_id"] for e in events if e["item_id"] and e["to_status"] == "succeeded")
    assert len(succeeded) == 50 and set(succeeded.values()) == {1}


def test_outputs_download_one_and_zip(system: System, api: Api) -> None:
    images = distinct_pngs(3, seed=2)
    keys = api.upload(images)
    job = api.wait(api.submit(keys)["id"])
    assert job["status"] == "succeeded"
    by_key = dict(zip(keys, images, strict=True))
    for item in job["items"]:
        url = item["outputs"][0]["url"]
        body = requests.get(url, timeout=30)
        assert body.status_code == 200
        assert body.content == by_key[item["input_key"]]
    r = api.get(f"/api/v1/jobs/{job['id']}/download")
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/zip"
    import io
    import zipfile

    archive = zipfile.ZipFile(io.BytesIO(r.content))
    assert archive.testzip() is None
    names = archive.namelist()
    assert names[-1] == "manifest.csv"  # tests/web/test_download.py checks names and manifest
    names = names[:-1]
    assert len(names) == 3
    assert sorted(archive.read(n) for n in names) == sorted(images)


def test_tampered_or_expired_download_url_is_refused(system: System, api: Api) -> None:
    keys = api.upload(distinct_pngs(1, seed=3))
    job = api.wait(api.submit(keys)["id"])
    url = job["items"][0]["outputs"][0]["url"]
    assert requests.get(url, timeout=30).status_code == 200
    assert requests.get(url.replace("sig=", "sig=0"), timeout=30).status_code == 403
    assert requests.get(url.replace("/echo", "/other"), timeout=30).status_code in (403, 404)


def test_retryable_failure_retries_then_succeeds(api: Api) -> None:
    keys = api.upload(distinct_pngs(2, seed=4))
    job = api.wait(api.submit(keys, params={"fail": "first_attempt"})["id"])
    assert job["status"] == "succeeded"
    assert [i["attempt"] for i in job["items"]] == [2, 2]
    kinds = [e["kind"] for e in api.events(job["id"])]
    assert kinds.count("item.retry") == 2


def test_fatal_failure_fails_once_with_message(api: Api) -> None:
    keys = api.upload(distinct_pngs(1, seed=5))
    job = api.wait(api.submit(keys, params={"fail": "fatal"})["id"])
    assert job["status"] == "failed"
    item = job["items"][0]
    assert item["status"] == "failed" and item["attempt"] == 1
    assert "injected fatal failure" in item["error"]
    assert job["counts"]["failed"] == 1


def test_retryable_failure_gives_up_after_max_attempts(api: Api) -> None:
    keys = api.upload(distinct_pngs(1, seed=6))
    job = api.wait(api.submit(keys, params={"fail": "retryable"})["id"])
    item = job["items"][0]
    assert item["status"] == "failed"
    assert item["attempt"] == 3
    assert "gave up after 3 attempts" in item["error"]


def test_retry_failed_item_and_job(api: Api) -> None:
    keys = api.upload(distinct_pngs(2, seed=7))
    job = api.wait(api.submit(keys, params={"fail": "fatal"})["id"])
    assert job["status"] == "failed"
    # A retried item runs with the same params, so it fails again: the point is a fresh attempt.
    r = api.post(f"/api/v1/items/{job['items'][0]['id']}/retry")
    assert r.status_code == 200 and r.json()["attempt"] == 2
    r = api.post(f"/api/v1/jobs/{job['id']}/retry")
    assert r.status_code == 200 and r.json()["retried"] in (1, 2)
    again = api.wait(job["id"])
    assert again["status"] == "failed"
    assert sorted(i["attempt"] for i in again["items"]) in ([2, 2], [2, 3])
    r = api.post(f"/api/v1/items/{again['items'][0]['id']}/retry")
    assert r.status_code == 200
    r = api.post(f"/api/v1/items/{again['items'][0]['id']}/retry")
    assert r.status_code == 409


def test_cancel_stops_queued_and_running_items(system: System, api: Api) -> None:
    keys = api.upload(distinct_pngs(6, seed=8))
    job = api.submit(keys, params={"delay_s": 30, "queue": "wan_local"})
    api.wait_item(job["id"], lambda i: i["status"] == "running" and i["progress"] > 0, timeout=30)
    r = api.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 200
    done = api.wait(job["id"], timeout=10)
    assert done["status"] == "cancelled"
    assert done["counts"]["cancelled"] == 6
    assert all(not i["outputs"] for i in done["items"])
    # The running item stops at its next cancel check: its worker is free for new work soon.
    quick = api.wait(
        api.submit(api.upload(distinct_pngs(1, seed=9)), params={"queue": "wan_local"})["id"], timeout=30
    )
    assert quick["status"] == "succeeded"


def test_idempotency_key_returns_first_job(api: Api) -> None:
    keys = api.upload(distinct_pngs(1, seed=10))
    first = api.post("/api/v1/jobs", json={"provider": "echo", "inputs": keys, "idempotency_key": "batch-42"})
    second = api.post(
        "/api/v1/jobs", json={"provider": "echo", "inputs": keys, "idempotency_key": "batch-42"}
    )
    assert first.status_code == 201 and second.status_code == 200
    assert first.json()["id"] == second.json()["id"]


def test_job_list_filters_and_pages(api: Api) -> None:
    keys = api.upload(distinct_pngs(1, seed=11))
    ids = [api.submit(keys)["id"] for _ in range(3)]
    for job_id in ids:
        api.wait(job_id)
    page = api.get("/api/v1/jobs", params={"limit": 2, "provider": "echo"}).json()
    assert len(page["jobs"]) == 2 and page["next_cursor"]
    assert page["jobs"][0]["id"] == ids[-1]
    nxt = api.get(
        "/api/v1/jobs", params={"limit": 2, "provider": "echo", "cursor": page["next_cursor"]}
    ).json()
    assert nxt["jobs"][0]["id"] == ids[0]
    assert api.get("/api/v1/jobs", params={"status": "running", "provider": "nope"}).json()["jobs"] == []


def test_stats_queues_and_providers(system: System, api: Api) -> None:
    stats = api.get("/api/v1/stats").json()["providers"]
    assert stats["echo"]["succeeded"] >= 1
    assert set(stats["echo"]) == {"total", "pending", "queued", "running", "succeeded", "failed", "cancelled"}
    queues = api.get("/api/v1/queues").json()["queues"]
    assert set(queues) == {"wan_local", "runway", "sam3", "control"}
    for name in ("wan_local", "runway", "sam3", "control"):
        assert queues[name]["workers_online"] == 1, queues
        assert queues[name]["waiting"] >= 0
    providers = {p["name"]: p for p in api.get("/api/v1/providers").json()["providers"]}
    echo = providers["echo"]
    assert echo["demo"] is True
    assert {p["name"] for p in echo["models"][0]["params"]} == {"delay_s", "fail", "queue"}


def test_gpu_and_api_workers_run_without_database_settings(system: System, api: Api) -> None:
    for name in ("wan_local", "sam3", "runway"):
        pid = system.stack.procs[name].pid
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        names = {e.split(b"=", 1)[0].decode() for e in environ if e}
        assert "DATABASE_URL" not in names and not any(n.startswith("PG") for n in names)
        assert b"NO_DATABASE=1" in environ
    control_env = Path(f"/proc/{system.stack.procs['control'].pid}/environ").read_bytes()
    assert b"DATABASE_URL=" in control_env
    # And they did real work: the 50-item test ran items on each of them.
    keys = api.upload(distinct_pngs(3, seed=12))
    job = api.wait(api.submit(keys, params={"queue": "spread"})["id"])
    assert job["status"] == "succeeded"


def test_health_is_public(system: System) -> None:
    r = requests.get(f"{system.base_url}/healthz", timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_manifest_is_written_last_and_lists_outputs(system: System, api: Api) -> None:
    keys = api.upload(distinct_pngs(1, seed=13))
    job = api.wait(api.submit(keys)["id"])
    item = job["items"][0]
    manifest = json.loads(system.store().get_bytes(f"outputs/{job['id']}/{item['id']}/1/manifest.json"))
    assert manifest["attempt"] == 1 and manifest["item_id"] == item["id"]
    assert [o["key"] for o in manifest["outputs"]] == [o["key"] for o in item["outputs"]]
    assert manifest["meta"]["overhead_ms"] >= 0
