"""Status that tells the truth, in a real Chromium against a real system: a bar per status, banners and
relative times that follow the job, waiting reasons, and time estimates from measured runs."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import System
from tests.web.conftest import Browser, screenshots, select_images
from tests.web.test_browser import choose_engine, open_params, photos

pytestmark = pytest.mark.browser

WAN = "wan_local:wan_i2v"


def segment_share(page: Any, bar: Any, status: str) -> float:
    """A segment's width over its bar's width, from the laid-out boxes."""
    whole = bar.bounding_box()
    seg = bar.locator(f".seg.s-{status}").bounding_box()
    assert whole and whole["width"] > 0
    return (seg["width"] if seg else 0.0) / whole["width"]


def test_a_cancelled_job_shows_what_succeeded_and_what_was_cancelled(page: Any, ui: System) -> None:
    keys = ui.api.upload(photos(2, seed=31))
    # Three quick items, then five that would run a minute each: cancelling leaves 3 + 5.
    inputs = [keys[0]] * 3 + [{"key": keys[1], "params": {"delay_s": 60}}] * 5
    job = ui.api.submit(inputs)
    page.goto(f"/jobs/{job['id']}")
    # One lane runs one of the slow five (which one first is the scheduler's choice, not the index).
    ui.api.wait_item(job["id"], lambda i: i["index"] >= 3 and i["status"] == "running", timeout=60)
    # The quick three must have finished (their successes applied) before the cancel: a lane may
    # still hold the third when the fourth starts, and a cancel would take it.
    deadline = time.monotonic() + 60
    while sum(i["status"] == "succeeded" for i in ui.api.job(job["id"])["items"]) < 3:
        assert time.monotonic() < deadline, "the three quick items did not succeed in 60 s"
        time.sleep(0.1)
    page.evaluate("window.__sameDocument = true")
    assert ui.api.post(f"/api/v1/jobs/{job['id']}/cancel").status_code == 200
    done = ui.api.wait(job["id"], timeout=30)
    assert (done["status"], done["counts"]["succeeded"], done["counts"]["cancelled"]) == ("cancelled", 3, 5)

    # The job page follows without a reload: a green 3/8 and a cancelled 5/8, not a full bar.
    page.wait_for_selector("#job-status .badge.s-cancelled")
    bar = page.locator("#job-bar")
    page.wait_for_function(
        "() => document.querySelector('#job-bar').getAttribute('aria-valuetext') === '3 succeeded · 5 cancelled of 8'"
    )
    page.wait_for_timeout(500)  # the segments' width transition (0.4 s) settles
    assert segment_share(page, bar, "succeeded") == pytest.approx(3 / 8, abs=0.02)
    assert segment_share(page, bar, "cancelled") == pytest.approx(5 / 8, abs=0.02)
    assert segment_share(page, bar, "waiting") == pytest.approx(0, abs=0.01)
    assert page.evaluate("window.__sameDocument === true"), "the page reloaded"
    assert page.locator("#job-eta-fact").is_hidden()

    # The jobs list: the same bar, and its legend in words.
    page.goto("/jobs")
    row = page.locator(f'.jobs-table tr[data-job-id="{job["id"]}"]')
    bar = row.locator(".status-bar")
    assert segment_share(page, bar, "succeeded") == pytest.approx(3 / 8, abs=0.02)
    assert segment_share(page, bar, "cancelled") == pytest.approx(5 / 8, abs=0.02)
    assert row.locator(".status-legend").inner_text() == "3 succeeded · 5 cancelled"
    assert bar.get_attribute("role") == "progressbar"


def test_the_start_banner_says_finished_when_the_job_finishes(page: Any, ui: System) -> None:
    keys = ui.api.upload(photos(2, seed=32))
    page.goto("/jobs/new")
    select_images(page, keys)
    page.reload()
    choose_engine(page, "echo:echo")
    open_params(page, "echo:echo").locator('[data-param="delay_s"]').fill("1")
    page.click("#run")
    page.wait_for_url(re.compile(r".*/jobs/[0-9a-f-]{36}\?created=1$"))
    page.evaluate("window.__sameDocument = true")
    assert page.locator(".flash.job-start").inner_text() == "Job started: 2 images."
    # Unfinished: a time left is shown (from the history of echo runs, or its own throughput).
    assert (
        page.locator("#job-eta").inner_text().endswith(("left", "left (from past runs)", "yet", "finishing"))
    )
    page.wait_for_selector("#job-status .badge.s-succeeded", timeout=30_000)
    page.wait_for_selector(".flash.job-finished")
    assert page.locator(".flash.job-start").count() == 0
    assert page.locator(".flash.job-finished").inner_text() == "Job finished: 2 succeeded."
    assert page.evaluate("window.__sameDocument === true"), "the page reloaded"
    assert page.locator("#job-eta-fact").is_hidden()
    # Opened again later, nothing says it started: the flash was for once.
    page.reload()
    assert page.locator(".flash.job-start, .flash.job-finished").count() == 0
    assert page.locator("#job-status .badge").inner_text() == "succeeded"


def test_relative_times_move_on_without_a_reload(page: Any, ui: System) -> None:
    job = ui.api.submit(ui.api.upload(photos(1, seed=33)))
    ui.api.wait(job["id"], timeout=30)
    # Made 57 s ago: the list says "5x s ago", and a minute later in its own time, without a reload.
    engine = sa.create_engine(ui.env["DATABASE_URL"])
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE jobs SET created_at = now() - interval '57 seconds' WHERE id = :id"),
            {"id": job["id"]},
        )
    engine.dispose()
    page.goto("/jobs")
    when = page.locator(f'.jobs-table tr[data-job-id="{job["id"]}"] time[data-relative]')
    assert re.fullmatch(r"5\d s ago", when.inner_text()), when.inner_text()
    page.evaluate("window.__sameDocument = true")
    # The page's timer re-renders every 15 s.
    page.wait_for_function(
        "(id) => document.querySelector(`tr[data-job-id='${id}'] time[data-relative]`).textContent === '1 min ago'",
        arg=job["id"],
        timeout=25_000,
    )
    assert page.evaluate("window.__sameDocument === true"), "the page reloaded"


def test_paused_jobs_and_queues_say_why_they_wait(page: Any, ui: System) -> None:
    keys = ui.api.upload(photos(1, seed=34))
    held = ui.api.submit(keys, params={"queue": "sam3"})
    paused = ui.api.submit(keys * 3, params={"delay_s": 30, "queue": "runway"})
    assert ui.api.post(f"/api/v1/jobs/{paused['id']}/pause").status_code == 200
    assert ui.api.post("/api/v1/queues/sam3/pause").status_code == 200
    try:
        page.goto("/jobs")
        note = page.locator(f'tr[data-job-id="{held["id"]}"] [data-waiting]')
        assert note.inner_text() == "waiting: queue sam3 is paused for maintenance"
        note = page.locator(f'tr[data-job-id="{paused["id"]}"] [data-waiting]')
        assert note.inner_text().startswith("paused: no new item starts")
        # Held back, no time left is made up for them.
        assert page.locator(f'tr[data-job-id="{paused["id"]}"] [data-eta]').count() == 0
        assert page.locator(f'tr[data-job-id="{held["id"]}"] [data-eta]').count() == 0
        screenshots(page, "jobs-list")
        page.goto(f"/jobs/{held['id']}")
        assert page.locator("#job-held").inner_text() == "waiting: queue sam3 is paused for maintenance"
        assert page.locator("#job-eta-fact").is_hidden()
    finally:
        ui.api.post("/api/v1/queues/sam3/resume")
        ui.api.post(f"/api/v1/jobs/{held['id']}/cancel")
        ui.api.post(f"/api/v1/jobs/{paused['id']}/cancel")


def _estimate(admin: Browser, count: int, steps: int) -> dict[str, Any]:
    r = admin.get(
        "/jobs/new/estimate",
        params={"engine": WAN, "count": count, f"p:{WAN}:steps": steps, f"p:{WAN}:num_frames": 9},
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_the_wan_estimate_is_learnt_from_measured_items_and_scales_with_the_parameters(
    page: Any, ui: System, admin: Browser
) -> None:
    """Ten WAN items (tiny pipeline on CPU) at two step counts, then the estimate for three at twice
    the larger: from the history, scaled by the work the parameters ask for. Whether it comes true
    (within ±50 % of the measured run) is a timing figure: bench/estimate.py measures it."""
    keys = ui.api.upload(photos(3, seed=35))
    before = _estimate(admin, 3, 40)
    if before["samples"] == 0:  # no WAN item ran yet in this system: no figure, and it says so
        assert "no measurements yet" in before["text"] and "total_s" not in before
    for steps in (2, 20):
        job = ui.api.submit(
            [keys[i % 3] for i in range(5)], provider="wan_local", params={"steps": steps, "num_frames": 9}
        )
        done = ui.api.wait(job["id"], timeout=300)
        assert done["status"] == "succeeded", [i["error"] for i in done["items"]]

    found = _estimate(admin, 3, 40)
    assert found["samples"] >= 10 and found["lanes"] >= 1, found
    assert "(simulated)" not in found["text"]
    # Three items on the lanes there are: whole rounds of the per-item time.
    rounds = -(-3 // found["lanes"])
    assert found["total_s"] == pytest.approx(rounds * found["per_item_s"], rel=0.01), found
    # More work per item, a longer estimate; the same history answers both.
    fewer = _estimate(admin, 3, 2)
    assert fewer["samples"] == found["samples"] and fewer["per_item_s"] < found["per_item_s"], (fewer, found)

    # The New job page shows it, with the chosen parameters.
    page.goto("/jobs/new")
    select_images(page, keys)
    page.reload()
    choose_engine(page, WAN)
    params = open_params(page, WAN)
    params.locator('[data-param="steps"]').fill("40")
    params.locator('[data-param="num_frames"]').fill("9")
    line = page.locator("#estimate-time")
    page.wait_for_function(
        "() => /for 3 images on \\d+ worker lanes? \\(.*recent runs\\)/.test(document.querySelector('#estimate-time').textContent)"
    )
    assert "each" in line.inner_text()
    assert "measured" in page.locator(f'label.engine-card[data-engine="{WAN}"] [data-measured]').inner_text()
    screenshots(page, "job-new-estimate")


def test_simulated_runway_figures_say_so(page: Any, ui: System) -> None:
    # This system's Runway is the local simulator (RUNWAY_BASE_URL on loopback).
    page.goto("/")
    assert page.locator("[data-simulated]").inner_text() == "(simulated)"
    keys = ui.api.upload(photos(1, seed=36))
    page.goto("/jobs/new")
    select_images(page, keys)
    page.reload()
    choose_engine(page, "runway:gen4_turbo")
    assert "(simulated: no money is spent)" in page.locator("#estimate").inner_text()
    choose_engine(page, "echo:echo")
    assert "simulated" not in page.locator("#estimate").inner_text()
