"""LOG_JSON=1: every process logs one JSON object per line, state changes with their ids as fields."""

from __future__ import annotations

import json

from tests.conftest import SystemFactory
from tests.support import distinct_pngs


def json_lines(text: str) -> list[dict]:
    """The log's JSON lines; Celery's start-up banner and tracebacks' continuation lines aside."""
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_json_logs_carry_job_and_item_ids(systems: SystemFactory) -> None:
    sysm = systems.start("json-logs", workers=("control", "wan_local"), env={"LOG_JSON": "1"})
    keys = sysm.api.upload(distinct_pngs(3, seed=91))
    job = sysm.api.wait(sysm.api.submit(keys, params={"queue": "wan_local"})["id"])
    assert job["status"] == "succeeded"

    control = json_lines(sysm.stack.procs["control"].log())
    worker = json_lines(sysm.stack.procs["wan_local"].log())
    assert worker and all({"ts", "level", "logger", "msg"} <= set(line) for line in worker)
    # The worker's own task lines are JSON too, not only the project's loggers.
    assert any("items.run" in line["msg"] and "succeeded" in line["msg"] for line in worker)

    changes = [line for line in control if line.get("job_id") == job["id"] and line.get("item_id")]
    succeeded = {line["item_id"] for line in changes if line.get("to_status") == "succeeded"}
    assert succeeded == {item["id"] for item in job["items"]}
    assert all(line["kind"].startswith("item.") and line["attempt"] == 1 for line in changes)
    assert any(line.get("kind") == "job.status" and line.get("to_status") == "succeeded" for line in control)
