"""Per-image work on the New job page in Chromium: a prompts file shown as an editable table before
Run, and a whole folder as one job. A real system: web, control worker, echo items on wan_local."""

from __future__ import annotations

import csv
import io
import re
import uuid
import zipfile
from typing import Any

import pytest

from tests.conftest import System
from tests.support import distinct_pngs, png_bytes
from tests.web.conftest import Browser, screenshots, select_images

pytestmark = pytest.mark.browser

NAMES = ["cat.png", "dog.png", "bird.png"]
PROMPTS_CSV = (
    "file,prompt\n"
    "cat.png,a cat yawns in the sun\n"
    'dog.png,"the dog runs, then ""sits"""\n'
    "ghost.png,nobody is here\n"
)


def job_id_of(page: Any) -> str:
    match = re.search(r"/jobs/([0-9a-f-]{36})", page.url)
    assert match, page.url
    return match.group(1)


def choose_file(page: Any, name: str, text: str) -> None:
    page.set_input_files(
        "#prompts-file", files=[{"name": name, "mimeType": "text/csv", "buffer": text.encode()}]
    )


def image_row(page: Any, name: str) -> Any:
    return page.locator("#prompts-table tr[data-kind=image]", has_text=name)


def test_prompts_file_becomes_an_editable_table_and_each_item_runs_with_its_row(
    page: Any, ui: System
) -> None:
    keys = ui.api.upload(distinct_pngs(3, seed=6107), NAMES)
    key_of = dict(zip(NAMES, keys, strict=True))
    page.goto("/images")
    select_images(page, keys)
    page.goto("/jobs/new")
    assert page.locator("#input-count").inner_text() == "3"
    page.click('label.engine-card[data-engine="echo:echo"]')
    assert page.locator("#prompts-panel").is_visible()

    # A file that cannot be read says which line, next to the input, and shows no table.
    choose_file(page, "bad.jsonl", '{"file": "cat.png", "prompt": "ok"}\n{"file": "dog.png", \n')
    error = page.locator("#prompts-file-error")
    error.wait_for(state="visible")
    assert "line 2" in error.inner_text() and "not JSON" in error.inner_text()
    assert not page.locator("#prompts-table-holder").is_visible()

    choose_file(page, "prompts.csv", PROMPTS_CSV)
    page.wait_for_function("() => document.querySelectorAll('#prompts-table tbody tr').length === 4")
    assert not error.is_visible()
    assert page.locator("#prompts-table tr[data-kind=image]").count() == 3
    unmatched = page.locator("#prompts-table tr[data-kind=unmatched]")
    assert unmatched.count() == 1
    assert "ghost.png" in unmatched.inner_text() and "matches no image" in unmatched.inner_text()
    cat, dog, bird = (image_row(page, n) for n in NAMES)
    assert cat.locator("input.item-prompt").input_value() == "a cat yawns in the sun"
    assert dog.locator("input.item-prompt").input_value() == 'the dog runs, then "sits"'
    assert bird.locator("input.item-prompt").input_value() == ""
    assert "no prompt: uses the job's" in bird.locator(".note").inner_text()
    assert page.locator("#prompts-table .note", has_text="no prompt").count() == 1

    cat.locator("input.item-prompt").fill("a cat yawns, edited on the page")
    # Clearing a row flags it; typing again clears the flag.
    dog.locator("input.item-prompt").fill("")
    assert "no prompt" in dog.locator(".note").inner_text()
    dog.locator("input.item-prompt").fill('the dog runs, then "sits"')
    assert "no prompt" not in dog.locator(".note").inner_text()
    # SAM3 takes concepts: the column shows them (none in this file), and edits survive the switch.
    page.click('label.engine-card[data-engine="sam3:sam3"]')
    assert page.locator("#prompts-column").inner_text().lower() == "concepts"
    assert cat.locator("input.item-prompt").input_value() == ""
    assert page.locator("#prompts-table .note", has_text="no prompt").count() == 3
    page.click('label.engine-card[data-engine="echo:echo"]')
    assert cat.locator("input.item-prompt").input_value() == "a cat yawns, edited on the page"
    screenshots(page, "new-job-prompts-table")

    page.click("#run")
    page.wait_for_url(re.compile(r".*/jobs/[0-9a-f-]{36}\?created=1$"))
    job = ui.api.wait(job_id_of(page), timeout=60)
    assert job["status"] == "succeeded", [i["error"] for i in job["items"]]
    prompt_of = {i["input_key"]: i["prompt"] for i in job["items"]}
    # Echo takes no job prompt on the page: the job's default is none, and bird.png runs with it.
    assert job["prompt"] is None
    assert prompt_of == {
        key_of["cat.png"]: "a cat yawns, edited on the page",
        key_of["dog.png"]: 'the dog runs, then "sits"',
        key_of["bird.png"]: job["prompt"],
    }

    # The zip names results after the inputs and its manifest carries each item's prompt.
    r = ui.api.get(f"/api/v1/jobs/{job['id']}/download")
    assert r.status_code == 200, r.text[:300]
    archive = zipfile.ZipFile(io.BytesIO(r.content))
    order = [i["input_key"] for i in sorted(job["items"], key=lambda i: i["index"])]
    name_of = {k: n for n, k in key_of.items()}
    assert archive.namelist() == [name_of[k] for k in order] + ["manifest.csv"]
    manifest = list(csv.DictReader(io.StringIO(archive.read("manifest.csv").decode("utf-8-sig"), newline="")))
    assert {row["input"]: row["prompt"] for row in manifest} == {
        "cat.png": "a cat yawns, edited on the page",
        "dog.png": 'the dog runs, then "sits"',
        "bird.png": "",
    }


def test_a_refused_row_is_named_and_the_table_comes_back(page: Any, ui: System) -> None:
    keys = ui.api.upload(distinct_pngs(2, seed=6113), ["left.png", "right.png"])
    page.goto("/images")
    select_images(page, keys)
    page.goto("/jobs/new")
    page.click('label.engine-card[data-engine="echo:echo"]')
    choose_file(page, "p.csv", "file,prompt,delay_s\nleft.png,goes left,\nright.png,goes right,-5\n")
    page.wait_for_function("() => document.querySelectorAll('#prompts-table tbody tr').length === 2")
    image_row(page, "left.png").locator("input.item-prompt").fill("goes left, edited")

    page.click("#run")
    page.wait_for_load_state()
    assert "/jobs/new" in page.url
    said = page.locator("#prompts-panel .field-error[role=alert]:not(#prompts-file-error)")
    assert said.inner_text().startswith("right.png: inputs[1].params.delay_s")
    # What was typed is still there; a corrected file replaces it.
    page.wait_for_function("() => document.querySelectorAll('#prompts-table tbody tr').length === 2")
    assert image_row(page, "left.png").locator("input.item-prompt").input_value() == "goes left, edited"
    choose_file(page, "p.csv", "file,prompt,delay_s\nleft.png,goes left,\nright.png,goes right,0.1\n")
    page.wait_for_function(
        "() => document.querySelector('#prompts-table input.item-prompt')?.value === 'goes left'"
    )
    page.click("#run")
    page.wait_for_url(re.compile(r".*/jobs/[0-9a-f-]{36}\?created=1$"))
    job = ui.api.wait(job_id_of(page), timeout=60)
    items = {i["input_key"]: i for i in job["items"]}
    assert [items[k]["prompt"] for k in keys] == ["goes left", "goes right"]
    assert [items[k]["params"] for k in keys] == [{}, {"delay_s": 0.1}]


def put_folder(ui: System, prefix: str, n: int) -> list[str]:
    """n PNGs under `prefix`, written straight into storage (as a team's bucket holds them), and a
    file that is not an image beside them."""
    store = ui.store()
    keys = [f"{prefix}shot-{i:03d}.png" for i in range(n)]
    for i, key in enumerate(keys):
        store.put_bytes(key, png_bytes(12 + i, 12, (40, 90 + i, 200)), "image/png")
    store.put_bytes(f"{prefix}readme.txt", b"not an image", "text/plain")
    return keys


def test_a_folder_from_the_images_page_runs_as_one_job(page: Any, ui: System) -> None:
    prefix = f"folders/{uuid.uuid4().hex[:8]}/"
    keys = put_folder(ui, prefix, 4)
    page.goto(f"/images?prefix={prefix}")
    page.click("#run-folder")
    page.wait_for_url(re.compile(r".*/jobs/new\?prefix=folders"))
    summary = page.locator("#folder-summary")
    assert " ".join(summary.inner_text().split()) == f"All images under {prefix}: 4 images"
    assert page.locator('input[name="inputs_prefix"]').input_value() == prefix
    assert page.locator('#selected-inputs input[name="inputs"]').count() == 0
    page.click('label.engine-card[data-engine="echo:echo"]')
    assert "for 4 images" in page.locator("#estimate").inner_text()
    assert page.locator("#run").is_enabled()
    screenshots(page, "new-job-folder")

    page.click("#run")
    page.wait_for_url(re.compile(r".*/jobs/[0-9a-f-]{36}\?created=1$"))
    # Four quick echo items may be done already: the banner then says so (test_status_view.py).
    assert page.locator(".flash-success").inner_text() in (
        "Job started: 4 images.",
        "Job finished: 4 succeeded.",
    )
    job = ui.api.wait(job_id_of(page), timeout=60)
    assert job["total"] == 4 and job["status"] == "succeeded"
    assert sorted(i["input_key"] for i in job["items"]) == keys


def test_the_folder_field_and_a_prompts_file_over_a_folder(page: Any, ui: System) -> None:
    prefix = f"folders/{uuid.uuid4().hex[:8]}/"
    keys = put_folder(ui, prefix, 3)
    page.goto("/jobs/new")
    page.fill("#folder", prefix)
    page.click('button[form="folder-form"]')
    page.wait_for_url(re.compile(r".*/jobs/new\?prefix=folders"))
    assert page.locator("#folder-count").inner_text() == "3"
    page.click('label.engine-card[data-engine="echo:echo"]')

    # Over a folder the table shows the file's rows against the folder's images; the file goes
    # with the job as it is.
    choose_file(page, "shots.csv", "file,prompt\nshot-001.png,the middle one\nother.png,nothing\n")
    page.wait_for_function("() => document.querySelectorAll('#prompts-table tbody tr').length === 2")
    assert page.locator("#prompts-table tr[data-kind=matched]").inner_text().count(keys[1]) == 1
    assert "matches no image" in page.locator("#prompts-table tr[data-kind=unmatched]").inner_text()
    assert "2 image(s) have no row" in page.locator("#prompts-summary").inner_text()

    page.click("#run")
    page.wait_for_url(re.compile(r".*/jobs/[0-9a-f-]{36}\?created=1$"))
    job = ui.api.wait(job_id_of(page), timeout=60)
    assert {i["input_key"]: i["prompt"] for i in job["items"]} == {
        keys[0]: None,
        keys[1]: "the middle one",
        keys[2]: None,
    }
    said = [e["detail"] for e in ui.api.events(job["id"]) if e["kind"] == "job.prompts_file"]
    assert len(said) == 1 and "1 rows used, 1 matched no image (other.png)" in said[0]


def test_the_page_without_a_prompts_file_or_a_folder_is_as_before(ui: System) -> None:
    """No JavaScript: the form posts selected keys as it always did; the page endpoint refuses a
    request without a file with a JSON error rather than a page."""
    browser = Browser(ui.base_url)
    assert browser.login().status_code == 302
    key = ui.api.upload(distinct_pngs(1, seed=6109), ["plain.png"])[0]
    token = browser.token("/jobs/new")
    r = browser.post(
        "/jobs/new",
        data={
            "csrf_token": token,
            "engine": "echo:echo",
            "inputs": [key],
            "item_prompts": "",
            "prompts_file": "",
        },
    )
    assert r.status_code == 302, r.text[:500]
    job = ui.api.wait(r.headers["Location"].split("/jobs/")[1].split("?")[0], timeout=60)
    assert [i["input_key"] for i in job["items"]] == [key] and job["items"][0]["prompt"] is None
    r = browser.post("/jobs/new/prompts", data={"inputs": [key]}, headers={"X-CSRF-Token": token})
    assert r.status_code == 400 and r.json()["error"]["message"] == "choose a CSV or JSONL file"
    r = browser.post(
        "/jobs/new/prompts", files={"file": ("p.csv", b"file,prompt\nplain.png,hi\n")}, data={"inputs": [key]}
    )
    assert r.status_code == 403, "a page POST without the CSRF token is refused"
    # A row's shape is checked as the job would check it, naming the row.
    r = browser.post(
        "/jobs/new/prompts",
        files={"file": ("p.jsonl", b'{"file": "plain.png", "prompt": 5}\n')},
        data={"inputs": [key]},
        headers={"X-CSRF-Token": token},
    )
    assert (
        r.status_code == 400
        and r.json()["error"]["message"] == "prompts_file[plain.png].prompt must be a string"
    )
    # Someone else's (or any) storage key is not taken as the folder job's prompts file.
    r = browser.post(
        "/jobs/new",
        data={"csrf_token": token, "engine": "echo:echo", "inputs_prefix": "folders/", "prompts_file": key},
    )
    assert r.status_code == 400 and "choose the prompts file again" in r.text


def test_a_folder_past_ten_thousand_images_is_counted_no_further(admin: Browser, ui: System) -> None:
    prefix = f"bigfolders/{uuid.uuid4().hex[:8]}/"
    store = ui.store()
    data = png_bytes(8, 8, (1, 2, 3))
    for i in range(10_001):
        store.put_bytes(f"{prefix}p-{i:05d}.png", data, "image/png")
    try:
        page = admin.get(f"/jobs/new?prefix={prefix}")
        assert page.status_code == 200
        count = re.search(r'<strong id="folder-count">([^<]+)</strong>', page.text)
        assert count and count.group(1) == "more than 10,000", page.text[:2000]
        store.delete(f"{prefix}p-10000.png")
        page = admin.get(f"/jobs/new?prefix={prefix}")
        count = re.search(r'<strong id="folder-count">([^<]+)</strong>', page.text)
        assert count and count.group(1) == "10,000"
    finally:
        store.delete_prefix(prefix)
