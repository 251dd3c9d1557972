"""Waiting for a job (`Prefer: wait=N`) and the job's event stream, against real processes."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.conftest import System, SystemFactory
from tests.support import FINAL, Api, distinct_pngs


@pytest.fixture(scope="module")
def live(systems: SystemFactory) -> Iterator[System]:
    """A system of its own: the control worker and echo items on the runway (threads) worker."""
    count = len(systems.started)
    yield systems.start("live", workers=("control", "runway"))
    systems.stop_since(count)


def test_prefer_wait_on_create_answers_with_the_finished_job(live: System) -> None:
    api = live.api
    key = api.upload(distinct_pngs(1, seed=41))[0]
    r = api.post(
        "/api/v1/jobs",
        json={"provider": "echo", "inputs": [key], "params": {"queue": "runway"}},
        headers={"Prefer": "wait=30"},
    )
    assert r.status_code == 201, r.text
    assert r.headers["Preference-Applied"] == "wait=30"
    job = r.json()
    assert job["status"] == "succeeded"
    assert job["counts"]["succeeded"] == 1 and job["progress"] == 1.0
    # Exactly the endpoint's normal JSON.
    assert set(job) == set(api.get(f"/api/v1/jobs/{job['id']}", params={"items_limit": 0}).json()) - {
        "items",
        "items_offset",
        "items_next_offset",
    }


def test_prefer_wait_on_get_answers_at_the_deadline_with_the_unfinished_job(live: System) -> None:
    api = live.api
    key = api.upload(distinct_pngs(1, seed=42))[0]
    job = api.submit([key], params={"queue": "runway", "delay_s": 20})
    started = time.monotonic()
    r = api.get(f"/api/v1/jobs/{job['id']}", headers={"Prefer": "wait=3"})
    elapsed = time.monotonic() - started
    assert r.status_code == 200, r.text
    assert r.headers["Preference-Applied"] == "wait=3"
    assert r.json()["status"] in ("queued", "running")
    assert elapsed >= 3.0
    # Over 60 is clamped; a job that is already over answers at once.
    api.post(f"/api/v1/jobs/{job['id']}/cancel")
    r = api.get(f"/api/v1/jobs/{job['id']}", headers={"Prefer": "wait=600"})
    assert r.headers["Preference-Applied"] == "wait=60"
    assert r.json()["status"] == "cancelled"


def woken(api: Api, job_id: str) -> dict[str, Any]:
    """GET with `Prefer: wait=60`, but give up after 30 s: only a notification answers it in time
    (the server's own deadline would answer after 60 s)."""
    r = api.s.get(api.url(f"/api/v1/jobs/{job_id}"), headers={"Prefer": "wait=60"}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def test_prefer_wait_is_woken_by_the_finish(live: System) -> None:
    api = live.api
    key = api.upload(distinct_pngs(1, seed=43))[0]
    job = api.submit([key], params={"queue": "runway", "delay_s": 1})
    answer = woken(api, job["id"])
    assert answer["status"] == "succeeded"
    assert answer["items"][0]["status"] == "succeeded"


def test_prefer_wait_is_woken_by_a_cancel(live: System) -> None:
    api = live.api
    key = api.upload(distinct_pngs(1, seed=46))[0]
    job = api.submit([key], params={"queue": "runway", "delay_s": 40})
    api.wait(job["id"], statuses=("running",))
    cancel = api.url(f"/api/v1/jobs/{job['id']}/cancel")
    # Its own connection: the waiting request holds the test's session meanwhile.
    threading.Timer(1.0, lambda: requests.post(cancel, headers=dict(api.s.headers), timeout=30)).start()
    assert woken(api, job["id"])["status"] == "cancelled"


def read_stream(
    api: Api, job_id: str, headers: dict[str, str] | None = None, params: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Every event of the job's stream until the server closes it: [{"id", "event", "data"}]."""
    events: list[dict[str, Any]] = []
    url = api.url(f"/api/v1/jobs/{job_id}/stream")
    with api.s.get(url, stream=True, timeout=120, headers=headers or {}, params=params) as r:
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"].startswith("text/event-stream")
        current: dict[str, Any] = {}
        for line in r.iter_lines(decode_unicode=True):
            if line == "":
                if "data" in current:
                    events.append(current)
                current = {}
            elif line.startswith(":"):
                continue
            else:
                field, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field == "data":
                    current["data"] = json.loads(value)
                elif field == "id":
                    current["id"] = int(value)
                elif field == "event":
                    current["event"] = value
    return events


def test_stream_sends_snapshots_and_items_until_the_job_finishes_and_resumes(live: System) -> None:
    api = live.api
    keys = api.upload(distinct_pngs(6, seed=44))
    job = api.submit(keys, params={"queue": "runway", "delay_s": 1.5})

    events = read_stream(api, job["id"])  # returns once the server closed the stream

    jobs = [e for e in events if e["event"] == "job"]
    assert jobs[0]["data"]["id"] == job["id"] and len(jobs[0]["data"]["items"]) == 6
    assert jobs[-1]["data"]["status"] == "succeeded" and jobs[-1]["data"]["progress"] == 1.0
    assert events[-1] is jobs[-1]
    item_events = [e for e in events if e["event"] == "items"]
    assert item_events, "no item changes were streamed"
    statuses = {i["id"]: i["status"] for e in item_events for i in e["data"]["items"]}
    assert set(statuses) == {i["id"] for i in jobs[0]["data"]["items"]}
    assert set(statuses.values()) == {"succeeded"}
    seen_running = {i["status"] for e in item_events for i in e["data"]["items"]}
    assert "running" in seen_running
    assert any(e["event"] == "progress" for e in events), "no live progress while items ran"
    ids = [e["id"] for e in events if "id" in e]
    assert ids == sorted(ids)

    # Resume from the middle: only items with events after that id come again.
    middle = item_events[len(item_events) // 2 - 1]["id"] if len(item_events) > 1 else jobs[0]["id"]
    log = api.events(job["id"])
    changed_after = {e["item_id"] for e in log if e["id"] > middle and e["item_id"]}
    assert changed_after, "nothing happened after the chosen id"
    resumed = read_stream(api, job["id"], headers={"Last-Event-ID": str(middle)})
    assert resumed[-1]["event"] == "job" and resumed[-1]["data"]["status"] == "succeeded"
    assert "items" not in resumed[-1]["data"]
    again = {i["id"] for e in resumed if e["event"] == "items" for i in e["data"]["items"]}
    assert again == changed_after
    # The query parameter works as the header does (for reconnects an EventSource cannot label).
    by_param = read_stream(api, job["id"], params={"last_event_id": middle})
    assert {i["id"] for e in by_param if e["event"] == "items" for i in e["data"]["items"]} == again


def test_stream_of_a_finished_job_is_one_snapshot(live: System) -> None:
    api = live.api
    key = api.upload(distinct_pngs(1, seed=45))[0]
    job = api.wait(api.submit([key], params={"queue": "runway"})["id"])
    events = read_stream(api, job["id"])
    assert [e["event"] for e in events] == ["job"]
    assert events[0]["data"]["status"] in FINAL


def test_stream_needs_auth_and_a_job(live: System) -> None:
    r = requests.get(live.base_url + "/api/v1/jobs/nope/stream", timeout=30)
    assert r.status_code == 401
    r = live.api.get("/api/v1/jobs/00000000-0000-0000-0000-000000000000/stream")
    assert r.status_code == 404
