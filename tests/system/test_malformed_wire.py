"""A report or an item message that does not fit the wire contract (app/contract/wire.py) is logged
and dropped where it arrives: nothing of it reaches Postgres, and the process goes on with the next."""

from __future__ import annotations

import time
from typing import Any

from celery import Celery

from app.coordination import REPORTS_KEY, Coordination
from app.proofs import item_proof
from tests.conftest import System
from tests.support import Api, distinct_pngs


def _wait_for(predicate: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _snapshot(api: Api, job_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    return api.job(job_id), api.events(job_id)


def test_malformed_reports_and_item_messages_change_nothing_and_the_system_goes_on(
    system: System, api: Api
) -> None:
    secret = system.env["SECRET_KEY"]
    finished = api.submit(api.upload(distinct_pngs(1, seed=171)), params={"queue": "wan_local"})
    finished = api.wait(finished["id"])
    assert finished["status"] == "succeeded"
    done_item = finished["items"][0]
    job_id = api.submit(
        api.upload(distinct_pngs(1, seed=172)), params={"queue": "wan_local", "delay_s": 20.0}
    )["id"]
    item = api.wait_item(job_id, lambda i: i["status"] == "running")
    before_finished = _snapshot(api, finished["id"])
    before_running = _snapshot(api, job_id)
    proof = item_proof(job_id, item["id"], 1, item["input_key"], secret)
    ident = {"item_id": item["id"], "job_id": job_id, "attempt": 1, "input_key": item["input_key"]}
    inside = f"outputs/{job_id}/{item['id']}/1/forged.png"

    r = system.redis()
    coord = Coordination(r)
    control = system.stack.procs["control"]
    dropped_before = control.log().count("dropping a report that does not parse")
    malformed_reports: list[Any] = [
        # Right item and proof, but not a state the contract knows.
        {**ident, "proof": proof, "state": "done", "outputs": [{"key": inside}]},
        # The attempt as a string: not the attempt the proof was signed for.
        {**ident, "attempt": "1", "proof": proof, "state": "failed", "error": "x", "retryable": False},
        # A success whose legend is not a legend: dropped whole, not applied without its meta.
        {**ident, "proof": proof, "state": "succeeded", "outputs": [{"key": inside}], "meta": {"legend": 3}},
        # A finished item's success again, with outputs that are not a list.
        {
            "item_id": done_item["id"],
            "job_id": finished["id"],
            "attempt": 1,
            "input_key": done_item["input_key"],
            "proof": item_proof(finished["id"], done_item["id"], 1, done_item["input_key"], secret),
            "state": "succeeded",
            "outputs": "everything",
        },
        {"state": "cancelled"},
        ["not", "a", "report"],
    ]
    for report in malformed_reports:
        coord.push_report(report)  # type: ignore[arg-type]
    r.xadd(REPORTS_KEY, {"r": "{not json"})
    _wait_for(
        lambda: (
            control.log().count("dropping a report that does not parse") - dropped_before
            >= len(malformed_reports) + 1
        ),
        "the applier to drop every malformed report",
    )

    worker = system.stack.procs["wan_local"]
    messages_before = worker.log().count("dropping an item message that does not parse")
    client = Celery("malformed", broker=system.stack.redis_url)
    malformed_messages: list[Any] = [
        # The running item, with its attempt as a string and no provider: not run, not reported.
        {**ident, "attempt": "1", "model": "echo", "proof": proof},
        {"item_id": done_item["id"]},
        "not a message",
    ]
    for n, body in enumerate(malformed_messages):
        client.send_task(
            "items.run",
            args=[body],
            task_id=f"malformed-{n}-{time.time()}",
            queue="wan_local",
            routing_key="wan_local",
        )
    client.close()
    _wait_for(
        lambda: (
            worker.log().count("dropping an item message that does not parse") - messages_before
            >= len(malformed_messages)
        ),
        "the worker to drop every malformed message",
    )

    # Nothing changed in Postgres: the finished job is as it was, the running item still runs.
    assert _snapshot(api, finished["id"]) == before_finished
    now, events = _snapshot(api, job_id)
    assert now["items"][0]["status"] == "running" and now["items"][0]["worker"] == item["worker"]
    assert not now["items"][0]["outputs"] and events == before_running[1]

    # Both processes went on: the running item ends with its own outputs, a new job runs on the worker.
    done = api.wait(job_id)
    assert done["status"] == "succeeded" and done["items"][0]["attempt"] == 1
    assert [o["key"] for o in done["items"][0]["outputs"]] != [inside]
    kinds = [e["kind"] for e in api.events(job_id)]
    assert "item.failed" not in kinds and "item.retry" not in kinds
    after = api.submit(api.upload(distinct_pngs(1, seed=173)), params={"queue": "wan_local"})
    assert api.wait(after["id"])["status"] == "succeeded"
