"""The Workers page: every worker process of a running system, what it runs, and draining one.

A system of its own (control, wan_local, sam3 and runway workers): the drain test stops one of them.
The wan_local worker runs two lanes (`-c 2`; CPU lanes here, one per GPU on a GPU host).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from bulkgen_stack.accounts import ensure_admin
from tests.conftest import System, SystemFactory
from tests.support import distinct_pngs
from tests.web.conftest import DESKTOP, page_problems, screenshots, sign_in

WAIT_MS = 30_000


@pytest.fixture(scope="module")
def fleet(systems: SystemFactory) -> System:
    system = systems.start("workers", workers=("control", "wan_local", "sam3", "runway"))
    system.restart_worker("wan_local", concurrency=2)
    return system


@pytest.fixture
def admin_page(chromium: Any, fleet: System) -> Iterator[Any]:
    email, password, _ = ensure_admin(fleet.stack)
    context = chromium.new_context(base_url=fleet.base_url, viewport=DESKTOP)
    context.set_default_timeout(15_000)
    page = context.new_page()
    problems = page_problems(page)
    page.goto("/login?next=/workers")
    sign_in(page, email, password)
    page.wait_for_url("**/workers")
    yield page
    context.close()
    assert not problems, problems


def process(page: Any, queue: str) -> Any:
    """The rows of the worker process serving `queue` (its node name is `<queue>@<host>`)."""
    return page.locator(f'tbody.worker-process[data-worker^="{queue}@"]')


def submit_slow_item(fleet: System, queue: str, delay_s: float, seed: int) -> tuple[str, str]:
    key = fleet.api.upload(distinct_pngs(1, seed=seed))[0]
    job = fleet.api.submit([key], params={"queue": queue, "delay_s": delay_s})
    return job["id"], fleet.api.job(job["id"])["items"][0]["id"]


def test_the_workers_page_lists_every_worker_with_its_device_and_state(admin_page: Any) -> None:
    page = admin_page
    expect(page.locator('nav a[href="/workers"]')).to_have_attribute("aria-current", "page")
    expect(page.locator("tbody.worker-process")).to_have_count(4, timeout=WAIT_MS)
    for queue, kind, device in (
        ("control", "control", "CPU"),
        ("wan_local", "gpu", "cpu ("),  # no GPU on this host: the lane runs on the CPU
        ("sam3", "gpu", "cpu ("),
        ("runway", "api", "API"),
    ):
        rows = process(page, queue)
        expect(rows).to_have_attribute("data-kind", kind)
        expect(rows).to_have_attribute("data-process-state", "ready", timeout=WAIT_MS)
        expect(rows.locator('td[data-label="Queue"]')).to_have_text(queue)
        expect(rows.locator('tr.process td[data-label="Heartbeat"]')).to_contain_text(" s ago")
        if queue != "wan_local":
            expect(rows.locator('td[data-label="Device"]')).to_contain_text(device)
        # Every live worker can be drained, from its process row.
        expect(rows.locator('form[action="/workers/drain"] button')).to_have_text("Drain")
        # One row per lane under a process with several; a process with one carries it in its row.
        lanes = rows.locator("tr.lane")
        if queue == "wan_local":
            expect(lanes).to_have_count(2)
            expect(rows.locator('tr.process td[data-label="Device"]')).to_have_text("2 lanes")
            for i in range(2):
                expect(lanes.nth(i).locator('td[data-label="Lane"]')).to_contain_text(f"lane {i}")
                expect(lanes.nth(i).locator('td[data-label="Device"]')).to_contain_text(device)
                expect(lanes.nth(i).locator('[data-state="ready"]')).to_be_visible()
        else:
            expect(lanes).to_have_count(0)
    expect(page.locator('a[href="/worker-tokens"]')).to_be_visible()


def test_a_running_item_shows_as_busy_with_its_item_then_counts_as_done(
    admin_page: Any, fleet: System
) -> None:
    page = admin_page
    job_id, item_id = submit_slow_item(fleet, "wan_local", 6, seed=4301)
    rows = process(page, "wan_local")
    # The page refreshes itself (htmx, every 2 s): no reload here.
    expect(rows).to_have_attribute("data-process-state", "busy", timeout=WAIT_MS)
    current = rows.locator(f'.running-item[data-item="{item_id}"]')
    expect(current).to_be_visible()
    expect(current.locator("a")).to_have_attribute("href", f"/jobs/{job_id}")
    expect(current).to_contain_text("for ")
    # The lane that runs it says busy; the other lane stays ready.
    lane_key = (
        rows.locator("tr.lane")
        .filter(has=page.locator(f'[data-item="{item_id}"]'))
        .get_attribute("data-lane")
    )
    lane = rows.locator(f'tr.lane[data-lane="{lane_key}"]')
    expect(lane.locator('[data-state="busy"]')).to_be_visible()
    expect(rows.locator('tr.lane [data-state="ready"]')).to_have_count(1)
    screenshots(page, "workers")
    assert fleet.api.wait(job_id)["status"] == "succeeded"
    expect(rows).to_have_attribute("data-process-state", "ready", timeout=WAIT_MS)
    expect(rows.locator(".running-item")).to_have_count(0)
    expect(rows.locator('tr.process td[data-label="Last hour"] .done')).to_have_text(
        "1 done", timeout=WAIT_MS
    )
    expect(lane.locator('td[data-label="Last hour"] .done')).to_have_text("1 done")


def test_draining_a_worker_finishes_its_item_then_removes_it(admin_page: Any, fleet: System) -> None:
    page = admin_page
    job_id, item_id = submit_slow_item(fleet, "sam3", 8, seed=4302)
    rows = process(page, "sam3")
    expect(rows.locator(f'.running-item[data-item="{item_id}"]')).to_be_visible(timeout=WAIT_MS)
    node = rows.get_attribute("data-worker")
    page.once("dialog", lambda dialog: dialog.accept())
    rows.locator('form[action="/workers/drain"] button').click()
    expect(page.locator(".flash-success")).to_contain_text(f"{node} is draining")
    # Draining while its item finishes: still listed, with the item, and no Drain button.
    expect(rows).to_have_attribute("data-process-state", "draining", timeout=WAIT_MS)
    expect(rows.locator(f'.running-item[data-item="{item_id}"]')).to_be_visible()
    expect(rows.locator('form[action="/workers/drain"]')).to_have_count(0)
    # Then it exits cleanly and leaves the list; the others stay.
    expect(rows).to_have_count(0, timeout=WAIT_MS)
    assert fleet.api.wait(job_id)["status"] == "succeeded"
    assert fleet.stack.procs["sam3"].popen.wait(timeout=30) == 0
    expect(page.locator("tbody.worker-process")).to_have_count(3)
    # The drained process no longer answers: draining it again is refused, nothing is broadcast.
    r = page.request.post("/workers/drain", form={"node": node, "csrf_token": csrf(page)})
    assert r.status == 404


def csrf(page: Any) -> str:
    return page.locator('meta[name="csrf-token"]').get_attribute("content")
