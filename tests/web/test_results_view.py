"""Results you can see on the job page: WAN videos that play in the row and larger, SAM3 segmentations
with a legend and a toggle per concept, and every file of an item in one download menu. Real tiny WAN
and SAM3 models on CPU, in real workers, through the page's own rows (web/views/job_rows.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import System, SystemFactory
from tests.support import png_bytes
from tests.web.conftest import DESKTOP, EMAIL, PASSWORD, SHOTS, page_problems, screenshots, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.models]


@pytest.fixture(scope="module")
def results(systems: SystemFactory) -> System:
    system = systems.start("results", workers=("control", "wan_local", "sam3"))
    system.stack.flask("create-user", EMAIL, "--password", PASSWORD)
    return system


@pytest.fixture
def rpage(chromium: Any, results: System) -> Iterator[Any]:
    context = chromium.new_context(base_url=results.base_url, viewport=DESKTOP, accept_downloads=True)
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto("/login")
    sign_in(page)
    page.wait_for_selector(".who")
    problems = page_problems(page)
    yield page
    context.close()
    assert not problems, problems


def row_of(page: Any, item: dict[str, Any]) -> Any:
    return page.locator(f"#item-{item['id']}")


def wait_succeeded(page: Any, item: dict[str, Any]) -> None:
    page.wait_for_function(
        "(id) => document.querySelector(`#item-${id} .badge`)?.textContent === 'succeeded'",
        arg=item["id"],
        timeout=180_000,
    )


def test_a_wan_video_plays_in_its_row_and_larger(rpage: Any, results: System) -> None:
    page = rpage
    keys = results.api.upload([png_bytes(320, 240, (214, 96, 77))], ["harbour.png"])
    job = results.api.submit(
        keys, provider="wan_local", prompt="waves roll in", params={"num_frames": 13, "steps": 1, "seed": 5}
    )
    # Opened while the item waits for the model: its result arrives through the page's live rows.
    page.goto(f"/jobs/{job['id']}")
    item = results.api.job(job["id"])["items"][0]
    wait_succeeded(page, item)
    done = results.api.wait(job["id"], timeout=60)
    item = done["items"][0]
    outputs = {o["role"]: o for o in item["outputs"]}
    assert set(outputs) == {"video", "poster"}

    row = row_of(page, item)
    video = row.locator("[data-player] video")
    assert video.count() == 1
    # Its poster frame is the provider's first frame, shown until it plays.
    assert video.get_attribute("poster") == outputs["poster"]["url"]
    box = video.bounding_box()
    assert box is not None and box["width"] >= 240, box
    play = row.locator("[data-play]")
    assert play.is_visible()
    screenshots(page, "job-results")

    play.click()
    assert play.is_hidden()
    page.wait_for_function(
        "(id) => document.querySelector(`#item-${id} [data-player] video`).currentTime > 0",
        arg=item["id"],
        timeout=15_000,
    )
    assert video.evaluate("(v) => v.controls && v.error === null && v.videoWidth > 0")

    # A larger view on demand, at most 90 % of the window's width.
    row.locator("[data-enlarge]").click()
    dialog = page.locator("dialog.viewer")
    assert dialog.evaluate("(d) => d.open")
    big = dialog.locator("video").bounding_box()
    assert big is not None and big["width"] > box["width"] and big["width"] <= 0.9 * DESKTOP["width"] + 1
    page.wait_for_function("() => document.querySelector('dialog.viewer video').currentTime > 0")
    page.screenshot(path=str(SHOTS / "job-results-larger-1280x800.png"))
    dialog.locator("button", has_text="Close").click()
    assert not dialog.evaluate("(d) => d.open")

    # Both files in one menu, closed until asked for.
    menus = row.locator("details[data-menu]")
    assert menus.count() == 1
    links = menus.locator("a[data-download]")
    assert [links.nth(i).get_attribute("data-download") for i in range(links.count())] == ["video", "poster"]
    assert links.first.is_hidden()
    menus.locator("summary").click()
    assert links.first.is_visible()
    with page.expect_download() as got:
        links.first.click()
    assert Path(got.value.path()).read_bytes() == requests.get(outputs["video"]["url"], timeout=30).content


def test_sam3_counts_legend_toggles_and_no_instances(rpage: Any, results: System) -> None:
    page = rpage
    keys = results.api.upload(
        [png_bytes(320, 240, (120, 90, 30)), png_bytes(300, 200, (30, 90, 120))], ["yard.png", "empty.png"]
    )
    job = results.api.submit(
        [
            {"key": keys[0], "prompts": ["cat", "dog"], "params": {"score_threshold": 0.0}},
            # Nothing scores above 1: the item finds no instances.
            {"key": keys[1], "prompts": ["unicorn"], "params": {"score_threshold": 1.0}},
        ],
        provider="sam3",
    )
    page.goto(f"/jobs/{job['id']}")
    done = results.api.wait(job["id"], timeout=180)
    assert done["status"] == "succeeded", [i["error"] for i in done["items"]]
    found, empty = sorted(done["items"], key=lambda i: i["index"])
    for item in (found, empty):
        wait_succeeded(page, item)

    # Counts per concept, with the colours the provider painted them in.
    legend = found["meta"]["legend"]
    assert [c["concept"] for c in legend] == ["cat", "dog"] and all(c["instances"] > 0 for c in legend)
    row = row_of(page, found)
    total = sum(c["instances"] for c in legend)
    assert row.locator(".seg-total").inner_text() == f"{total} instances of 2 concepts"
    entries = row.locator(".seg-legend li")
    assert entries.count() == 2
    for i, c in enumerate(legend):
        entry = entries.nth(i)
        assert entry.locator(".concept").inner_text() == c["concept"]
        assert entry.locator(".n").inner_text() == str(c["instances"])
        colour = entry.locator(".swatch").evaluate("(s) => getComputedStyle(s).backgroundColor")
        r, g, b = (int(c["colour"][k : k + 2], 16) for k in (1, 3, 5))
        assert colour == f"rgb({r}, {g}, {b})"
    layers = row.locator(".seg-layer")
    assert layers.count() == 2
    page.wait_for_function(
        "(id) => Array.from(document.querySelectorAll(`#item-${id} .seg-stage img`))"
        ".every((i) => i.complete && i.naturalWidth > 0)",
        arg=found["id"],
    )
    assert layers.nth(0).is_visible() and layers.nth(1).is_visible()
    # The layers lie exactly over the input.
    base = row.locator(".seg-base").bounding_box()
    assert all(layers.nth(i).bounding_box() == base for i in range(2))

    # A toggle per concept shows or hides its layer alone.
    toggles = row.locator("[data-layer-toggle]")
    toggles.nth(0).uncheck()
    assert layers.nth(0).is_hidden() and layers.nth(1).is_visible()
    toggles.nth(0).check()
    toggles.nth(1).uncheck()
    assert layers.nth(0).is_visible() and layers.nth(1).is_hidden()
    toggles.nth(1).check()

    # No instances is said, not left as an empty picture.
    none_row = row_of(page, empty)
    assert none_row.locator(".seg-none").inner_text() == "No instances found"
    assert none_row.locator(".seg-none").is_visible()
    assert none_row.locator(".seg-layer").count() == 0
    assert none_row.locator(".seg-legend .n").inner_text() == "0"
    assert none_row.locator("[data-layer-toggle]").is_disabled()
    assert row.locator(".seg-none").count() == 0

    # Every file of an item in one menu (masks, the instances JSON, the preview; the layers are the view).
    for item, roles in (
        (found, ["mask_cat", "mask_dog", "instances", "preview"]),
        (empty, ["mask_unicorn", "instances", "preview"]),
    ):
        menu = row_of(page, item).locator("details[data-menu]")
        assert menu.count() == 1
        links = menu.locator("a[data-download]")
        assert [links.nth(i).get_attribute("data-download") for i in range(links.count())] == roles
    assert row.locator("a.button[data-download]").count() == 0
    screenshots(page, "job-results-sam3")
    # On a phone the result takes the card's width, and the menu opens within the window.
    page.set_viewport_size({"width": 390, "height": 844})
    stage = row.locator(".seg-stage").bounding_box()
    cell = row.locator("td.result").bounding_box()
    assert stage is not None and cell is not None and stage["width"] >= cell["width"] - 1
    row.locator("details[data-menu] summary").click()
    menu_box = row.locator(".menu-list").bounding_box()
    assert menu_box is not None and menu_box["x"] + menu_box["width"] <= 390
    row.locator(".menu-list").scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "job-results-menu-390x844.png"))
    # A click elsewhere closes it.
    page.locator("h1").click()
    assert row.locator(".menu-list").is_hidden()
    page.set_viewport_size(DESKTOP)


def test_rows_route_renders_only_this_jobs_rows(rpage: Any, results: System) -> None:
    page = rpage
    keys = results.api.upload([png_bytes(40, 30, (1, 2, 3)), png_bytes(41, 30, (4, 5, 6))])
    first = results.api.submit([keys[0]])
    other = results.api.submit([keys[1]])
    mine = results.api.wait(first["id"], timeout=60)["items"][0]
    theirs = results.api.wait(other["id"], timeout=60)["items"][0]
    r = page.request.get(f"/jobs/{first['id']}/rows?ids={mine['id']},{theirs['id']}")
    assert r.status == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text()
    assert html.count("<tr ") == 1 and f'id="item-{mine["id"]}"' in html
    assert theirs["id"] not in html
    assert f'data-sig="succeeded|1|{len(mine["outputs"])}|"' in html
    assert page.request.get(f"/jobs/{first['id']}/rows?ids=" + ",".join(["x"] * 201)).status == 400
    assert page.request.get("/jobs/no-such-job/rows?ids=a").status == 404
