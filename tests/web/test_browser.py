"""The admin web app in a real Chromium against a real system (web, control worker, echo on wan_local)."""

from __future__ import annotations

import io
import re
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import System
from tests.support import png_bytes
from tests.web.conftest import DESKTOP, EMAIL, drop_files, screenshots, select_images, sign_in

pytestmark = pytest.mark.browser

PHOTO_COLORS = [(214, 96, 77), (77, 146, 214), (112, 186, 92), (233, 180, 60), (150, 98, 200)]


def photos(n: int, seed: int) -> list[bytes]:
    """Distinct images big enough to look like something in the screenshots."""
    return [
        png_bytes(320 + seed % 7, 240 + i, PHOTO_COLORS[(seed + i) % len(PHOTO_COLORS)]) for i in range(n)
    ]


def choose_engine(page: Any, value: str) -> None:
    page.click(f'label.engine-card[data-engine="{value}"]')


def open_params(page: Any, engine: str) -> Any:
    block = page.locator(f'[data-engine-params="{engine}"]')
    details = block.locator("details")
    if details.get_attribute("open") is None:
        details.locator("summary").click()
    return block


def item_rows(page: Any) -> Any:
    return page.locator("#items tbody tr[data-item-id]")


def job_id_of(page: Any) -> str:
    match = re.search(r"/jobs/([0-9a-f-]{36})", page.url)
    assert match, page.url
    return match.group(1)


def test_sign_in_and_out(chromium: Any, ui: System) -> None:
    context = chromium.new_context(base_url=ui.base_url, viewport=DESKTOP)
    page = context.new_page()
    page.goto("/jobs")
    assert page.url.startswith(f"{ui.base_url}/login?next=")
    screenshots(page, "login")
    sign_in(page, EMAIL, "not-the-password")
    assert page.locator(".flash-error").inner_text() == "Wrong email or password."
    sign_in(page)
    page.wait_for_url(f"{ui.base_url}/jobs")
    assert page.locator(".who").inner_text() == EMAIL
    page.click("text=Sign out")
    page.wait_for_url(f"{ui.base_url}/login")
    page.goto("/")
    assert page.url.startswith(f"{ui.base_url}/login")
    context.close()


def test_upload_run_watch_progress_and_download(page: Any, ui: System) -> None:
    images = photos(3, seed=1)
    names = ["red.png", "blue.png", "green.png"]
    page.goto("/images")
    drop_files(
        page,
        "#dropzone",
        [(n, "image/png", data) for n, data in zip(names, images, strict=True)]
        + [("notes.txt", "text/plain", b"these are not pixels")],
    )
    page.wait_for_function("() => document.querySelectorAll('#uploads [data-result]').length === 4")
    done = page.locator('#uploads [data-result="done"]')
    assert done.count() == 3
    rejected = page.locator('#uploads [data-result="failed"]')
    assert rejected.count() == 1
    assert rejected.locator(".state").inner_text() == "notes.txt is not an image (PNG, JPEG or WEBP expected)"
    assert page.locator("#selection-count").inner_text() == "3"
    screenshots(page, "images-uploaded")

    # The selection survives moving between pages of the tab.
    page.goto("/images")
    assert page.locator("#selection-count").inner_text() == "3"
    assert page.locator(".image-card.selected").count() == 3
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('.image-card img')).every((i) => i.complete && i.naturalWidth > 0)"
    )
    screenshots(page, "images")

    page.click("#selection-go")
    page.wait_for_url("**/jobs/new")
    assert page.locator("#input-count").inner_text() == "3"
    assert page.locator('#selected-inputs input[name="inputs"]').count() == 3
    # What each choice costs, before running: Runway bills per second of video.
    choose_engine(page, "runway:gen4_turbo")
    assert "$0.75" in page.locator("#estimate").inner_text()
    open_params(page, "runway:gen4_turbo").locator('[data-param="duration"]').select_option("10")
    assert "$1.50" in page.locator("#estimate").inner_text()
    # Veo without its audio track is billed at its lower rate: 3 x 8 s x 15, then 10 credits.
    choose_engine(page, "runway:veo3.1_fast")
    assert "$3.60" in page.locator("#estimate").inner_text()
    open_params(page, "runway:veo3.1_fast").locator('[data-param="audio"]').uncheck()
    assert "$2.40" in page.locator("#estimate").inner_text()
    choose_engine(page, "runway:gen4_turbo")
    assert page.locator('[data-prompt-field="prompt"]').is_visible()
    choose_engine(page, "sam3:sam3")
    assert page.locator('[data-prompt-field="prompts"]').is_visible()
    assert "free" in page.locator("#estimate").inner_text()
    choose_engine(page, "echo:echo")
    assert not page.locator('[data-prompt-field="prompt"]').is_visible()
    params = open_params(page, "echo:echo")
    params.locator('[data-param="delay_s"]').fill("0.8")
    screenshots(page, "new-job")

    page.click("#run")
    page.wait_for_url(re.compile(r".*/jobs/[0-9a-f-]{36}\?created=1$"))
    job_id = job_id_of(page)
    assert page.locator(".flash-success").inner_text() == "Job started: 3 images."
    page.evaluate("window.__sameDocument = true")
    seen: set[str] = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        seen.add(page.locator("#job-percent").inner_text())
        if "100%" in seen and page.locator("#job-status .badge").inner_text() == "succeeded":
            break
        page.wait_for_timeout(100)
    assert "100%" in seen, seen
    assert seen - {"0%", "100%"}, f"no progress between 0 and 100 % was shown: {seen}"
    assert page.evaluate("window.__sameDocument === true"), "the page reloaded"
    assert page.evaluate("sessionStorage.getItem('bulkgen.selection')") == "[]"
    assert page.locator('[data-count="succeeded"] span').inner_text() == "3"

    rows = item_rows(page)
    assert rows.count() == 3
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('#items img.media')).filter((i) => i.complete && i.naturalWidth > 0).length === 3"
    )
    for i in range(3):
        row = rows.nth(i)
        assert row.locator(".badge").inner_text() == "succeeded"
        assert row.locator('[data-label="Attempt"]').inner_text() == "1 of 1"
        assert row.locator(".worker").inner_text().startswith("wan_local@")
        assert row.locator('[data-label="Duration"]').inner_text() != "—"
    screenshots(page, "job-succeeded")

    with page.expect_download() as one:
        rows.nth(0).locator("a[data-download]").click()
    assert Path(one.value.path()).read_bytes() in images
    with page.expect_download() as everything:
        page.click("text=Download all (zip)")
    assert everything.value.suggested_filename == f"job-{job_id[:8]}.zip"
    archive = zipfile.ZipFile(io.BytesIO(Path(everything.value.path()).read_bytes()))
    assert archive.testzip() is None
    assert sorted(archive.read(n) for n in archive.namelist() if n != "manifest.csv") == sorted(images)

    page.click("text=Event log")
    page.wait_for_url(f"**/jobs/{job_id}/events")
    log = page.locator("#events tbody")
    what = log.locator('td[data-label="What"]').all_inner_texts()
    assert what.count("Job created") == 1
    assert what.count("Job is now succeeded") == 1
    assert sum(1 for w in what if w.startswith("Succeeded")) == 3
    assert sum(1 for w in what if w.startswith("Started")) == 3
    started = log.locator("tr", has=page.locator('td[data-label="What"]', has_text="Started")).first
    assert started.locator(".worker").inner_text().startswith("wan_local@")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", started.locator("time").inner_text())
    screenshots(page, "events")


def test_retry_failed_items_until_they_succeed(page: Any, ui: System) -> None:
    keys = ui.api.upload(photos(2, seed=2))
    page.goto("/jobs/new")
    select_images(page, keys)
    page.reload()
    choose_engine(page, "echo:echo")
    open_params(page, "echo:echo").locator('[data-param="fail"]').select_option("first_attempt")
    page.click("#run")
    page.wait_for_url(re.compile(r".*/jobs/[0-9a-f-]{36}\?created=1$"))
    job_id = job_id_of(page)
    # MAX_ATTEMPTS=1: the first attempt's retryable failure is final.
    page.wait_for_function(
        "() => document.querySelector('#job-status .badge').textContent === 'failed'", timeout=30_000
    )
    rows = item_rows(page)
    for i in range(2):
        assert rows.nth(i).locator(".error-text").inner_text() == (
            "injected retryable failure (gave up after 1 attempts)"
        )
    assert page.locator("text=Retry failed items").is_visible()
    assert not page.locator("text=Cancel job").is_visible()
    screenshots(page, "job-failed")

    rows.nth(0).locator("button", has_text="Retry").click()
    page.wait_for_url(f"**/jobs/{job_id}")
    assert page.locator(".flash-success").inner_text() == "Retrying item #0 (attempt 2)."
    first_id = ui.api.job(job_id)["items"][0]["id"]
    first = page.locator(f"#item-{first_id}")
    page.wait_for_function(
        f"() => document.querySelector('#item-{first_id} .badge').textContent === 'succeeded'", timeout=30_000
    )
    assert first.locator('[data-label="Attempt"]').inner_text() == "2 of 2"
    page.wait_for_function("() => document.querySelector('#job-status .badge').textContent === 'failed'")

    page.click("text=Retry failed items")
    page.wait_for_url(f"**/jobs/{job_id}")
    assert page.locator(".flash-success").inner_text() == "Retrying 1 failed item."
    page.wait_for_function(
        "() => document.querySelector('#job-status .badge').textContent === 'succeeded'", timeout=30_000
    )
    assert [rows.nth(i).locator(".badge").inner_text() for i in range(2)] == ["succeeded", "succeeded"]
    assert not page.locator("text=Retry failed items").is_visible()
    job = ui.api.job(job_id)
    assert job["status"] == "succeeded" and [i["attempt"] for i in job["items"]] == [2, 2]


def test_cancel_a_running_job(page: Any, ui: System) -> None:
    keys = ui.api.upload(photos(3, seed=3))
    job = ui.api.submit(keys, params={"delay_s": 30})
    page.goto(f"/jobs/{job['id']}")
    page.wait_for_selector("#items .badge.s-running", timeout=20_000)
    page.wait_for_function(
        "() => parseFloat(document.querySelector('#items .status-cell .bar > span')?.style.width || '0') > 0"
    )
    screenshots(page, "job-running", full_page=False)
    log = page.context.new_page()
    log.goto(f"/jobs/{job['id']}/events")
    assert log.locator('td[data-label="What"]', has_text="Cancel requested").count() == 0
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("text=Cancel job")
    page.wait_for_url(f"**/jobs/{job['id']}")
    assert page.locator(".flash-success").inner_text() == "Cancelled 3 unfinished items."
    assert page.locator("#job-status .badge").inner_text() == "cancelled"
    assert page.locator('[data-count="cancelled"] span').inner_text() == "3"
    assert item_rows(page).locator(".badge.s-cancelled").count() == 3
    assert not page.locator("text=Cancel job").is_visible()
    # The event log open in another tab shows the cancel without a reload.
    log.locator('td[data-label="What"]', has_text="Cancel requested").wait_for()
    log.locator('td[data-label="What"]', has_text="Job is now cancelled").wait_for()
    # The running item stopped at its next cancel check: the worker takes new work at once.
    quick = ui.api.wait(ui.api.submit(keys[:1])["id"], timeout=20)
    assert quick["status"] == "succeeded"


def test_pause_resume_and_reprioritise_from_the_job_page(page: Any, ui: System) -> None:
    keys = ui.api.upload(photos(3, seed=4))
    job = ui.api.submit([keys[i % 3] for i in range(8)], params={"delay_s": 0.5})
    page.goto(f"/jobs/{job['id']}")
    page.wait_for_selector("#items .badge.s-running, #items .badge.s-succeeded", timeout=20_000)
    page.click("#job-actions button:has-text('Pause')")
    page.wait_for_url(f"**/jobs/{job['id']}")
    assert "Job paused" in page.locator(".flash-success").inner_text()
    assert page.locator("#job-status .badge").inner_text() == "paused"
    assert page.locator("#job-actions button:has-text('Resume')").is_visible()
    assert not page.locator("#job-actions button:has-text('Pause')").is_visible()
    # Nothing new starts while paused: once the running item finished, the counts stay.
    deadline = time.monotonic() + 20
    while ui.api.job(job["id"])["counts"]["running"] and time.monotonic() < deadline:
        time.sleep(0.2)
    paused = ui.api.job(job["id"])["counts"]
    time.sleep(1.5)
    assert ui.api.job(job["id"])["counts"] == paused and paused["pending"] > 0

    page.select_option("#job-priority", "high")
    page.fill("#job-max-concurrency", "2")
    page.click("#job-schedule button[type=submit]")
    page.wait_for_url(f"**/jobs/{job['id']}")
    flash = page.locator(".flash-success").inner_text()
    assert "priority normal -> high" in flash and "max_concurrency unlimited -> 2" in flash, flash
    assert page.locator("#job-priority").input_value() == "high"

    page.click("#job-actions button:has-text('Resume')")
    page.wait_for_url(f"**/jobs/{job['id']}")
    page.wait_for_selector("#job-status .badge.s-succeeded", timeout=60_000)
    done = ui.api.job(job["id"])
    assert done["priority"] == "high" and done["max_concurrency"] == 2
    log = page.context.new_page()
    log.goto(f"/jobs/{job['id']}/events")
    for words in ("Paused", "Scheduling changed", "Resumed"):
        assert log.locator('td[data-label="What"]', has_text=words).count() >= 1, words


def test_pause_a_queue_from_the_dashboard(page: Any, ui: System) -> None:
    page.goto("/")
    row = page.locator('[data-queue="sam3"]')
    page.once("dialog", lambda dialog: dialog.accept())
    row.locator("button:has-text('Pause')").click()
    page.wait_for_url("**/")
    assert "Queue sam3 paused" in page.locator(".flash-success").inner_text()
    assert row.locator(".badge.s-paused").is_visible()
    assert ui.api.get("/api/v1/queues").json()["queues"]["sam3"]["paused"] is True
    screenshots(page, "dashboard-queue-paused", full_page=False)
    row.locator("button:has-text('Resume')").click()
    page.wait_for_url("**/")
    assert row.locator(".badge.s-paused").count() == 0
    assert ui.api.get("/api/v1/queues").json()["queues"]["sam3"]["paused"] is False


def test_submission_errors_show_next_to_the_field(page: Any, ui: System) -> None:
    keys = ui.api.upload(photos(1, seed=4))
    page.goto("/jobs/new")
    select_images(page, keys)
    page.reload()
    choose_engine(page, "echo:echo")
    open_params(page, "echo:echo").locator('[data-param="delay_s"]').fill("99999")
    page.click("#run")
    page.wait_for_load_state()
    field = page.locator('[data-engine-params="echo:echo"] .field.has-error')
    assert field.locator("label").inner_text() == "delay s"
    assert field.locator(".field-error").inner_text() == "delay_s must be at most 3600"
    assert field.is_visible(), "the parameters holding the error are folded away"
    assert page.locator('#selected-inputs input[name="inputs"]').count() == 1
    screenshots(page, "new-job-error")

    choose_engine(page, "sam3:sam3")
    page.fill("#prompts", "  ")
    page.click("#run")
    page.wait_for_load_state()
    error = page.locator('[data-prompt-field="prompts"] .field-error')
    assert error.inner_text() == "give at least one non-empty concept to segment"
    assert error.is_visible()


def test_job_list_filters_and_pages(page: Any, ui: System) -> None:
    keys = ui.api.upload(photos(1, seed=5))
    ok = [ui.api.wait(ui.api.submit(keys)["id"]) for _ in range(3)]
    bad = ui.api.wait(ui.api.submit(keys, params={"fail": "fatal"})["id"])
    assert bad["status"] == "failed"

    page.goto("/jobs?limit=2")
    rows = page.locator(".jobs-table tbody tr")
    assert rows.count() == 2
    assert rows.nth(0).get_attribute("data-job-id") == bad["id"]
    assert rows.nth(1).get_attribute("data-job-id") == ok[2]["id"]
    assert rows.nth(0).locator('[data-label="Created by"]').inner_text() == "admin@example.com"
    assert (
        "ago" in rows.nth(0).locator('[data-label="Age"]').inner_text()
        or "just now" in rows.nth(0).inner_text()
    )
    page.click("text=Older →")
    assert [rows.nth(i).get_attribute("data-job-id") for i in range(2)] == [ok[1]["id"], ok[0]["id"]]

    page.goto("/jobs")
    page.select_option("select[name=status]", "failed")
    page.select_option("select[name=provider]", "echo")
    page.click("button:has-text('Filter')")
    assert page.url.endswith("/jobs?status=failed&provider=echo")
    assert rows.count() >= 1
    assert set(rows.locator(".badge").all_inner_texts()) == {"failed"}
    assert rows.nth(0).get_attribute("data-job-id") == bad["id"]
    assert "1 failed" in rows.nth(0).inner_text()
    page.goto("/jobs")
    screenshots(page, "jobs")


def test_dashboard_shows_queues_providers_and_recent_jobs(page: Any, ui: System) -> None:
    done = ui.api.wait(ui.api.submit(ui.api.upload(photos(1, seed=7)))["id"])
    assert done["status"] == "succeeded"
    page.goto("/")
    queues = page.locator("[data-queue]")
    assert queues.count() == 4
    workers = page.locator('[data-queue="wan_local"] [data-label="Workers online"]')
    assert workers.inner_text() == "1"
    assert page.locator('[data-queue="control"] [data-label="Workers online"]').inner_text() == "1"
    assert page.locator('[data-queue="runway"] [data-label="Workers online"]').inner_text() == "0"
    echo = page.locator('[data-provider="echo"]')
    assert "succeeded" in echo.locator('[data-label="By status"]').inner_text()
    assert re.fullmatch(r"\d+%", echo.locator('[data-label="Success rate"]').inner_text())
    assert echo.locator('[data-label="Mean duration"]').inner_text() != "—"
    assert page.locator("[data-spend]").inner_text() == "$0.00"
    assert page.locator("a", has_text="Open Flower").get_attribute("href") == "http://127.0.0.1:5555/"
    screenshots(page, "dashboard")

    # Live: a new job shows up in the recent list without a reload.
    page.evaluate("window.__sameDocument = true")
    job = ui.api.submit(ui.api.upload(photos(1, seed=6)))
    page.wait_for_selector(f'a[href="/jobs/{job["id"]}"]', timeout=15_000)
    assert page.evaluate("window.__sameDocument === true")


def test_thousand_item_job_page_stays_responsive(page: Any, big_job: dict[str, Any]) -> None:
    # Live updates come from the job's event stream, for this page's window of items only.
    with page.expect_request(
        re.compile(r".*/api/v1/jobs/[0-9a-f-]+/stream\?items_offset=0&items_limit=100$")
    ) as stream:
        page.goto(f"/jobs/{big_job['id']}")
    assert stream.value.url.endswith("items_limit=100")
    assert item_rows(page).count() == 100
    assert page.locator(".pager").inner_text().count("Page 1 of 10") == 1
    screenshots(page, "job-1000-items", full_page=False)
    page.click("text=Next →")
    page.wait_for_url("**page=2")
    assert item_rows(page).first.locator('[data-label="#"]').inner_text() == "100"
    page.fill(".pager input[name=page]", "10")
    page.click(".pager button:has-text('Go')")
    page.wait_for_url("**page=10")
    assert item_rows(page).count() == 100
    assert item_rows(page).last.locator('[data-label="#"]').inner_text() == "999"


def test_error_and_empty_pages(page: Any, ui: System) -> None:
    response = page.goto("/jobs/no-such-job")
    assert response.status == 404
    assert page.locator("h1").inner_text() == "Not found"
    assert page.locator(".error-page").inner_text().count("There is no job no-such-job.") == 1
    assert page.locator(".nav").is_visible()
    screenshots(page, "error-404")

    page.goto("/images?prefix=nothing-here/")
    assert "Nothing stored under nothing-here/" in page.locator(".empty").inner_text()
    page.goto("/jobs?status=cancelled&provider=runway")
    assert "No jobs match these filters." in page.locator(".empty").inner_text()
    page.goto("/jobs/new")
    select_images(page, [])
    page.reload()
    assert page.locator("#no-selection").is_visible()
    assert page.locator("#run").is_disabled()
    screenshots(page, "new-job-empty")


def test_account_tokens_users_page_and_a_members_view(page: Any, chromium: Any, ui: System) -> None:
    page.goto("/account")
    assert page.locator("#user-role").text_content() == "admin"
    page.fill("#token-form input[name=name]", "grafana")
    page.select_option("#token-form select[name=scope]", "read")
    page.click("#token-form button[type=submit]")
    assert page.locator("#new-token").inner_text().startswith("bg_")
    assert "grafana" in page.locator("#token-list").inner_text()
    screenshots(page, "account")

    ui.stack.flask("create-user", "member@example.com", "--password", "member-password-1", "--role", "member")
    page.goto("/users")
    assert "member@example.com" in page.locator("#user-list").inner_text()
    screenshots(page, "users")

    # A member sees the admin's job but gets no buttons that change it.
    job = ui.api.submit(ui.api.upload(photos(1, seed=91)), params={"queue": "sam3"})
    context = chromium.new_context(base_url=ui.base_url, viewport=DESKTOP)
    member = context.new_page()
    member.goto("/login")
    sign_in(member, "member@example.com", "member-password-1")
    member.wait_for_url(f"{ui.base_url}/")
    assert member.locator("#user-role").text_content() == "member"
    assert member.locator(".nav a:has-text('Users')").count() == 0
    member.goto(f"/jobs/{job['id']}")
    assert member.locator("#read-only-note").is_visible()
    assert member.locator("#job-actions form").count() == 0 and member.locator("#job-schedule").count() == 0
    screenshots(member, "job-view-only")
    context.close()
    ui.api.post(f"/api/v1/jobs/{job['id']}/cancel")
