"""The job page follows the job's event stream, and falls back to polling when the stream breaks."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from tests.conftest import System
from tests.support import distinct_pngs

pytestmark = pytest.mark.browser


def access_lines(ui: System, pattern: str) -> list[str]:
    """Lines of the web app's access log (gunicorn --access-logfile -) that match `pattern`."""
    return [line for line in ui.stack.procs["web"].log().splitlines() if re.search(pattern, line)]


def watch_to_the_end(page: Any) -> set[str]:
    seen: set[str] = set()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        seen.add(page.locator("#job-percent").inner_text())
        if "100%" in seen and page.locator("#job-status .badge").inner_text() == "succeeded":
            return seen
        page.wait_for_timeout(100)
    raise AssertionError(f"the page never reached 100 %: {seen}")


def test_job_page_follows_the_stream_without_polling(page: Any, ui: System) -> None:
    keys = ui.api.upload(distinct_pngs(3, seed=71))
    job = ui.api.submit(keys, params={"delay_s": 1.5})
    page.goto(f"/jobs/{job['id']}")

    seen = watch_to_the_end(page)

    assert seen - {"0%", "100%"}, f"no progress between 0 and 100 % was shown: {seen}"
    for row in page.locator("#items tbody tr[data-item-id]").all():
        assert row.locator(".badge").inner_text() == "succeeded"
    # The stream's access line is written when it closes (after the final snapshot).
    deadline = time.monotonic() + 15
    while not access_lines(ui, rf"GET /api/v1/jobs/{job['id']}/stream\?") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert access_lines(ui, rf"GET /api/v1/jobs/{job['id']}/stream\?")
    polls = access_lines(ui, rf"GET /api/v1/jobs/{job['id']}(\?|/events\?)")
    assert polls == [], polls


def test_job_page_falls_back_to_polling_when_the_stream_breaks(page: Any, ui: System) -> None:
    keys = ui.api.upload(distinct_pngs(2, seed=72))
    job = ui.api.submit(keys, params={"delay_s": 1.5})
    page.route("**/stream**", lambda route: route.abort())
    page.goto(f"/jobs/{job['id']}")

    watch_to_the_end(page)

    assert access_lines(ui, rf"GET /api/v1/jobs/{job['id']}\?"), "the page did not poll"
    assert not access_lines(ui, rf"GET /api/v1/jobs/{job['id']}/stream")


def test_dashboard_rerenders_on_changes_not_on_a_timer(page: Any, ui: System) -> None:
    streams: list[str] = []
    page.on("request", lambda r: streams.append(r.url) if "/api/v1/stream" in r.url else None)
    page.goto("/")
    page.wait_for_timeout(500)
    before = len(access_lines(ui, r'"GET / HTTP'))
    # Nothing changes for longer than the old 5 s refresh: the page asks for nothing.
    page.wait_for_timeout(8000)
    assert len(access_lines(ui, r'"GET / HTTP')) == before
    keys = ui.api.upload(distinct_pngs(1, seed=73))
    job = ui.api.submit(keys, params={"delay_s": 0.5})
    # The new job appears without a reload, fetched because the stream said it changed.
    page.locator(f"#live-dashboard a[href='/jobs/{job['id']}']").first.wait_for(timeout=30_000)
    assert len(access_lines(ui, r'"GET / HTTP')) > before
    assert streams, "the dashboard did not open the changes stream"


def test_dashboard_falls_back_to_a_timer_when_the_stream_is_refused(page: Any, ui: System) -> None:
    page.route("**/api/v1/stream", lambda route: route.fulfill(status=503, body="down"))
    page.goto("/")
    page.wait_for_timeout(500)
    before = len(access_lines(ui, r'"GET / HTTP'))
    keys = ui.api.upload(distinct_pngs(1, seed=74))
    job = ui.api.submit(keys)
    page.locator(f"#live-dashboard a[href='/jobs/{job['id']}']").first.wait_for(timeout=30_000)
    assert len(access_lines(ui, r'"GET / HTTP')) > before
