"""A job's zip (GET /api/v1/jobs/{id}/download): results named after their inputs, manifest.csv, a
selection of items; and "Download selected" on the job page in Chromium. A real system: web,
control worker and echo items on the wan_local worker."""

from __future__ import annotations

import csv
import io
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import System
from tests.support import distinct_pngs

# A comma, a quote, a line break and non-ASCII: what CSV quoting and UTF-8 must carry intact.
ODD_PROMPT = 'a cat, "fluffy"\nin a café ☕ — 猫'
JOB_PROMPT = "slow pan over the scene"
NAMES = ["cat.jpg", "cat.jpg", "Dog.png", "bird.png"]


def _zip(response: Any) -> zipfile.ZipFile:
    assert response.status_code == 200, response.text[:500]
    assert response.headers["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert archive.testzip() is None
    return archive


def _manifest(archive: zipfile.ZipFile) -> list[dict[str, str]]:
    raw = archive.read("manifest.csv")
    assert raw.startswith("\ufeff".encode())
    return list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"), newline="")))


@pytest.fixture(scope="module")
def job(ui: System) -> dict[str, Any]:
    """Four items: two inputs both named cat.jpg (PNG bytes), Dog.png, and bird.png made to fail."""
    images = distinct_pngs(len(NAMES), seed=7301)
    keys = ui.api.upload(images, NAMES)
    inputs = [
        {"key": keys[0], "prompt": ODD_PROMPT},
        keys[1],
        keys[2],
        {"key": keys[3], "params": {"fail": "fatal"}},
    ]
    done = ui.api.wait(ui.api.submit(inputs, prompt=JOB_PROMPT)["id"])
    assert done["counts"]["succeeded"] == 3 and done["counts"]["failed"] == 1, done["counts"]
    done["images"] = images
    return done


def test_results_are_named_after_their_inputs_with_a_manifest(ui: System, job: dict[str, Any]) -> None:
    r = ui.api.get(f"/api/v1/jobs/{job['id']}/download")
    assert r.headers["Content-Disposition"] == f'attachment; filename="job-{job["id"][:8]}.zip"'
    archive = _zip(r)
    images = job["images"]
    # The stem of the input's name with the output's own extension (echo keeps the PNG it was given);
    # the second cat.jpg, later in item order, gets " (2)"; the failed bird.png has no entry.
    assert archive.namelist() == ["cat.png", "cat (2).png", "Dog.png", "manifest.csv"]
    assert [archive.read(n) for n in archive.namelist()[:3]] == images[:3]

    rows = _manifest(archive)
    assert ",".join(rows[0]) == "index,item_id,input,input_key,prompt,status,attempt,outputs,error,cost_usd"
    items = sorted(job["items"], key=lambda i: i["index"])
    assert [r["item_id"] for r in rows] == [i["id"] for i in items]
    assert [r["index"] for r in rows] == ["0", "1", "2", "3"]
    assert [r["input"] for r in rows] == NAMES
    assert [r["input_key"] for r in rows] == [i["input_key"] for i in items]
    assert [r["prompt"] for r in rows] == [ODD_PROMPT, JOB_PROMPT, JOB_PROMPT, JOB_PROMPT]
    assert [r["status"] for r in rows] == ["succeeded", "succeeded", "succeeded", "failed"]
    assert [r["attempt"] for r in rows] == ["1", "1", "1", "1"]
    assert [r["outputs"] for r in rows] == ["cat.png", "cat (2).png", "Dog.png", ""]
    assert [r["error"] for r in rows[:3]] == ["", "", ""]
    assert "injected fatal failure" in rows[3]["error"]
    # Quoted as CSV quotes: the field in double quotes, its quotes doubled, the line break kept.
    assert '"a cat, ""fluffy""\nin a café ☕ — 猫"'.encode() in archive.read("manifest.csv")


def test_download_selected_items(ui: System, job: dict[str, Any]) -> None:
    items = sorted(job["items"], key=lambda i: i["index"])
    ids = [i["id"] for i in items]
    url = f"/api/v1/jobs/{job['id']}/download"

    # Comma-joined, in any order: the zip follows item order. Alone, the second cat.jpg is plain "cat".
    r = ui.api.get(url, params={"items": f"{ids[2]},{ids[1]}"})
    assert r.headers["Content-Disposition"] == f'attachment; filename="job-{job["id"][:8]}-2-items.zip"'
    archive = _zip(r)
    assert archive.namelist() == ["cat.png", "Dog.png", "manifest.csv"]
    assert [archive.read(n) for n in archive.namelist()[:2]] == job["images"][1:3]
    assert [(r["index"], r["outputs"]) for r in _manifest(archive)] == [("1", "cat.png"), ("2", "Dog.png")]

    # Repeated parameters, a failed item among them: its row, without an entry.
    archive = _zip(ui.api.get(url, params=[("items", ids[3]), ("items", ids[0])]))
    assert archive.namelist() == ["cat.png", "manifest.csv"]
    assert archive.read("cat.png") == job["images"][0]
    rows = _manifest(archive)
    assert [(r["index"], r["status"], r["outputs"]) for r in rows] == [
        ("0", "succeeded", "cat.png"),
        ("3", "failed", ""),
    ]


def test_a_bad_selection_is_refused_naming_items(ui: System, job: dict[str, Any]) -> None:
    url = f"/api/v1/jobs/{job['id']}/download"
    other = ui.api.wait(ui.api.submit([job["items"][0]["input_key"]])["id"])
    known = job["items"][0]["id"]
    for bad in (
        "00000000-0000-0000-0000-000000000000",
        f"{known},not-an-item",
        other["items"][0]["id"],  # an item of another job
        "",
        " , ",
    ):
        r = ui.api.get(url, params={"items": bad})
        assert r.status_code == 400, (bad, r.status_code, r.text[:300])
        error = r.json()["error"]
        assert error["field"] == "items" and error["code"] == "invalid_parameter", error
        assert "items" in error["message"]
    # A NUL is more than a database takes in a query: refused before one is made.
    assert ui.api.get(url, params={"items": f"{known},\x00"}).status_code == 400


def test_manifest_of_a_large_job_lists_every_item_in_order(ui: System, big_job: dict[str, Any]) -> None:
    """1,000 items read a batch at a time (more than one batch): every one in the manifest, once."""
    archive = _zip(ui.api.get(f"/api/v1/jobs/{big_job['id']}/download"))
    assert archive.namelist() == ["manifest.csv"]  # nothing has run: no results yet
    rows = _manifest(archive)
    assert [r["index"] for r in rows] == [str(i) for i in range(1000)]
    assert len({r["item_id"] for r in rows}) == 1000
    assert {r["input"] for r in rows} == {"big.png"}
    assert {r["outputs"] for r in rows} == {""}


# --- the job page ---------------------------------------------------------------------------


@pytest.mark.browser
def test_tick_items_and_download_selected(page: Any, ui: System) -> None:
    from tests.web.conftest import screenshots

    images = distinct_pngs(3, seed=7302)
    keys = ui.api.upload(images, ["first.png", "second.png", "third.png"])
    long_prompt = "A slow dolly shot along a harbour at dusk, " * 6 + "the end"
    inputs = [{"key": keys[0], "prompt": long_prompt}, keys[1], keys[2]]
    # Slow items: the rows are ticked while running and re-rendered from JSON as they finish.
    job = ui.api.submit(inputs, prompt=JOB_PROMPT, params={"delay_s": 2})
    page.goto(f"/jobs/{job['id']}")
    rows = page.locator("#items tbody tr[data-item-id]")
    assert rows.count() == 3
    button = page.locator("#download-selected-button")
    assert button.is_disabled()

    prompt = rows.nth(0).locator(".prompt-text")
    assert prompt.get_attribute("title") == long_prompt
    assert prompt.inner_text() == long_prompt
    box = prompt.bounding_box()
    assert box is not None and box["height"] < 4 * 22, "a long prompt is cut to a few lines"
    prompt.click()
    opened = prompt.bounding_box()
    assert opened is not None and opened["height"] > box["height"], "a click shows the whole prompt"
    # The row changes as its item runs and finishes; the opened prompt stays open through it.
    page.wait_for_function(
        "(id) => document.querySelector(`#item-${id} .badge`).textContent === 'succeeded'",
        arg=rows.nth(0).get_attribute("data-item-id"),
        timeout=60_000,
    )
    assert rows.nth(0).locator("img.media").count() == 1
    still = prompt.bounding_box()
    assert still is not None and still["height"] == opened["height"], "the prompt stayed open"
    assert rows.nth(1).locator(".prompt-text").inner_text() == JOB_PROMPT

    rows.nth(0).locator(".item-pick").check()
    rows.nth(2).locator(".item-pick").check()
    assert button.inner_text() == "Download selected (2)" and button.is_enabled()
    assert page.locator("#pick-all").evaluate("(el) => el.indeterminate")

    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('#items .badge')).every((b) => b.textContent === 'succeeded')",
        timeout=60_000,
    )
    # The rows were rendered again by app.js (their results are in): the ticks and prompts stayed.
    assert rows.nth(0).locator("img.media").count() == 1
    assert [rows.nth(i).locator(".item-pick").is_checked() for i in range(3)] == [True, False, True]
    assert rows.nth(0).locator(".prompt-text").get_attribute("title") == long_prompt
    assert rows.nth(2).locator(".prompt-text").inner_text() == JOB_PROMPT
    screenshots(page, "job-picked")

    with page.expect_download() as selected:
        button.click()
    match = re.fullmatch(r"job-([0-9a-f]{8})-2-items\.zip", selected.value.suggested_filename)
    assert match and job["id"].startswith(match.group(1))
    archive = zipfile.ZipFile(io.BytesIO(Path(selected.value.path()).read_bytes()))
    assert archive.namelist() == ["first.png", "third.png", "manifest.csv"]
    assert [archive.read("first.png"), archive.read("third.png")] == [images[0], images[2]]
    rows_csv = _manifest(archive)
    assert [(r["input"], r["prompt"]) for r in rows_csv] == [
        ("first.png", long_prompt),
        ("third.png", JOB_PROMPT),
    ]

    # "Select all" ticks every row of the page, and the whole page comes down.
    page.locator("#pick-all").check()
    assert button.inner_text() == "Download selected (3)"
    with page.expect_download() as everything:
        button.click()
    archive = zipfile.ZipFile(io.BytesIO(Path(everything.value.path()).read_bytes()))
    assert archive.namelist() == ["first.png", "second.png", "third.png", "manifest.csv"]
