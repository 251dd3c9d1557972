"""Flower's task list shows real work: the items of a job and the periodic control tasks, no task a
second (the report appliers, the window filler and the webhook sender are threads of the control
worker, tasks/control_loops.py)."""

from __future__ import annotations

import time

import requests

from tests.conftest import SystemFactory
from tests.support import distinct_pngs

FLOWER_AUTH = ("ops", "flower-tasks-secret")
RECONCILE_INTERVAL_S = 5.0
PERIODIC = {"control.reconcile", "control.retention"}


def flower_tasks(url: str) -> dict[str, dict]:
    r = requests.get(f"{url}/api/tasks", auth=FLOWER_AUTH, params={"limit": 10000}, timeout=30)
    r.raise_for_status()
    return r.json()


def test_flower_lists_the_jobs_items_and_only_periodic_control_tasks(systems: SystemFactory) -> None:
    sysm = systems.start(
        "flower-tasks",
        workers=("control", "wan_local"),
        env={"RECONCILE_INTERVAL_S": str(RECONCILE_INTERVAL_S), "WORKER_DEVICE": "cpu"},
    )
    sysm.stack.start_flower(*FLOWER_AUTH)
    flower = f"http://127.0.0.1:{sysm.stack.flower_port}"
    watched_from = time.monotonic()

    images = distinct_pngs(100, seed=4100)
    keys = [key for start in range(0, 100, 25) for key in sysm.api.upload(images[start : start + 25])]
    job = sysm.api.wait(sysm.api.submit(keys)["id"], timeout=300)
    assert job["status"] == "succeeded", job["counts"]
    item_ids = {item["id"] for item in job["items"]}
    assert len(item_ids) == 100

    # Flower learns of tasks from the workers' events, a moment after they happen.
    deadline = time.monotonic() + 60
    tasks: dict[str, dict] = {}
    while time.monotonic() < deadline:
        tasks = flower_tasks(flower)
        ran = {tid for tid, t in tasks.items() if t["name"] == "items.run" and t["state"] == "SUCCESS"}
        if ran >= item_ids:
            break
        time.sleep(1)
    watched_s = time.monotonic() - watched_from

    by_name: dict[str, set[str]] = {}
    for task_id, task in tasks.items():
        by_name.setdefault(task["name"], set()).add(task_id)
    # One task per item, its id the item's id.
    assert by_name.pop("items.run") == item_ids
    # The rest is the periodic control work; none of it runs every second.
    assert set(by_name) <= PERIODIC, {str(name): len(ids) for name, ids in by_name.items()}
    control_tasks = sum(len(ids) for ids in by_name.values())
    assert control_tasks <= watched_s / RECONCILE_INTERVAL_S + 2, (control_tasks, watched_s)
