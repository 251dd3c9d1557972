"""Fixtures for the admin pages: an isolated system with real workers, a signed-in Chromium, screenshots.

Chromium is Debian's (`apt-get install -y chromium`), driven by pip's playwright; set CHROMIUM to use
another binary.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import System, SystemFactory

EMAIL = "ops@example.com"
PASSWORD = "correct-horse-battery"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-dev-shm-usage",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
SHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"


@pytest.fixture(scope="session")
def ui(systems: SystemFactory) -> System:
    """A system of its own: a control worker and one wan_local worker (where echo items run).

    MAX_ATTEMPTS=1 makes an echo item with fail=first_attempt fail for good on attempt 1, so a manual
    retry (attempt 2) is what makes it succeed.
    """
    env = {"MAX_ATTEMPTS": "1", "FLOWER_URL": "http://127.0.0.1:5555/"}
    system = systems.start("ui", workers=("control", "wan_local"), env=env, shared=True)
    system.stack.flask("create-user", EMAIL, "--password", PASSWORD)
    return system


class Browser:
    """A plain requests session signed in through the login form, for tests without Chromium."""

    def __init__(self, base_url: str) -> None:
        self.base = base_url
        self.s = requests.Session()

    def token(self, path: str = "/login") -> str:
        html = self.s.get(self.base + path, timeout=30).text
        match = re.search(r'name="csrf-token" content="([^"]+)"', html)
        assert match, f"no CSRF token on {path}"
        return match.group(1)

    def login(self, email: str = EMAIL, password: str = PASSWORD, next_path: str = "") -> requests.Response:
        token = self.token("/login")
        return self.s.post(
            self.base + "/login",
            data={"csrf_token": token, "email": email, "password": password, "next": next_path},
            allow_redirects=False,
            timeout=30,
        )

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.s.get(self.base + path, timeout=30, allow_redirects=False, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return self.s.post(self.base + path, timeout=30, allow_redirects=False, **kw)


@pytest.fixture
def visitor(ui: System) -> Browser:
    return Browser(ui.base_url)


@pytest.fixture
def admin(ui: System) -> Browser:
    client = Browser(ui.base_url)
    assert client.login().status_code == 302
    return client


@pytest.fixture(scope="session")
def big_job(ui: System) -> Iterator[dict[str, Any]]:
    """1,000 items parked on the sam3 queue, which has no worker here: the job stays queued."""
    key = ui.api.upload([_png(40, 30, (90, 140, 60))], ["big.png"])[0]
    job = ui.api.submit([key] * 1000, params={"queue": "sam3"})
    yield job
    ui.api.post(f"/api/v1/jobs/{job['id']}/cancel")


def _png(width: int, height: int, color: tuple[int, int, int]) -> bytes:
    from tests.support import png_bytes

    return png_bytes(width, height, color)


# --- Chromium -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install -y chromium (or set CHROMIUM)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def sign_in(page: Any, email: str = EMAIL, password: str = PASSWORD) -> None:
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.click("form button[type=submit]")


@pytest.fixture(scope="session")
def signed_in(chromium: Any, ui: System) -> dict[str, Any]:
    """Cookies of a session signed in through the login page, reused by each test's fresh context."""
    context = chromium.new_context(base_url=ui.base_url)
    page = context.new_page()
    page.goto("/login")
    sign_in(page)
    page.wait_for_url(f"{ui.base_url}/")
    state = context.storage_state()
    context.close()
    return state


def page_problems(page: Any) -> list[str]:
    """Script errors and console errors the page raises from now on (a test ends asserting none)."""
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on(
        "console",
        lambda msg: (
            problems.append(f"console: {msg.text}")
            if msg.type == "error" and "Failed to load resource" not in msg.text
            else None
        ),
    )
    return problems


@pytest.fixture
def page(chromium: Any, ui: System, signed_in: dict[str, Any]) -> Iterator[Any]:
    context = chromium.new_context(
        base_url=ui.base_url, viewport=DESKTOP, storage_state=signed_in, accept_downloads=True
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    problems = page_problems(page)
    yield page
    context.close()
    assert not problems, problems


# Interactive and media elements whose boxes intersect (outside a shared label, which overlays a
# checkbox on its image on purpose, and outside sticky bars, which float over content by design).
_OVERLAPS_JS = """
() => {
  const sel = 'a, button, input:not([type=hidden]), select, textarea, img, video, h1, h2, .badge, summary';
  const els = Array.from(document.querySelectorAll(sel)).filter((el) => {
    if (el.closest('[data-floating]')) return false;
    // false inside closed <details> too (their content is laid out but skipped)
    if (!el.checkVisibility({ checkOpacity: true, checkVisibilityCSS: true })) return false;
    const r = el.getBoundingClientRect();
    return r.width > 2 && r.height > 2;
  });
  const boxes = els.map((el) => [el, el.getBoundingClientRect()]);
  const found = [];
  for (let i = 0; i < boxes.length; i++) {
    for (let j = i + 1; j < boxes.length; j++) {
      const [a, ra] = boxes[i];
      const [b, rb] = boxes[j];
      if (a.contains(b) || b.contains(a)) continue;
      const la = a.closest('label');
      if (la && la === b.closest('label')) continue;
      const w = Math.min(ra.right, rb.right) - Math.max(ra.left, rb.left);
      const h = Math.min(ra.bottom, rb.bottom) - Math.max(ra.top, rb.top);
      if (w > 2 && h > 2) {
        const name = (el) => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + (el.className ? '.' + String(el.className).split(' ').join('.') : '') + ' "' + (el.textContent || el.getAttribute('alt') || '').trim().slice(0, 30) + '"';
        found.push(name(a) + ' overlaps ' + name(b));
      }
      if (found.length > 5) return found;
    }
  }
  return found;
}
"""


def check_layout(page: Any, where: str) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    inner = page.evaluate("window.innerWidth")
    assert width <= inner, f"{where}: the page is {width} px wide in a {inner} px window"
    overlaps = page.evaluate(_OVERLAPS_JS)
    assert not overlaps, f"{where}: {overlaps}"
    spilled = page.evaluate(
        """() => Array.from(document.querySelectorAll('.panel, .topbar, .page-head'))
          .filter((el) => el.scrollWidth > el.clientWidth + 1)
          .map((el) => `${el.className}: ${el.scrollWidth} > ${el.clientWidth}`)"""
    )
    assert not spilled, f"{where}: content wider than its box: {spilled}"
    # A table shown as cards on a phone labels each cell with a ::before (no element of its own):
    # the cell's text must start past the label, or the two are drawn over each other.
    covered = page.evaluate(
        """() => Array.from(document.querySelectorAll('.cards td[data-label]:not([data-label=""])'))
          .filter((td) => td.offsetParent !== null)
          .filter((td) => {
            const label = getComputedStyle(td, '::before');
            if (label.content === 'none' || label.position !== 'absolute') return false;
            const cell = getComputedStyle(td);
            // Beside the label, or below it (a cell that starts its content under its label).
            const beside = parseFloat(cell.paddingLeft) < parseFloat(label.width);
            const below = parseFloat(cell.paddingTop) >= parseFloat(label.top) + 1.2 * parseFloat(label.fontSize);
            return beside && !below;
          })
          .map((td) => `${td.closest('table').className} td[data-label=${td.dataset.label}]`)"""
    )
    assert not covered, f"{where}: card labels drawn over the cell's text: {sorted(set(covered))}"


def screenshots(page: Any, name: str, full_page: bool = True) -> None:
    """Check and save the page at desktop and phone size (artifacts/screenshots/NAME-WxH.png)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for size in (DESKTOP, PHONE):
        page.set_viewport_size(size)
        page.wait_for_timeout(200)
        where = f"{name} at {size['width']}x{size['height']}"
        check_layout(page, where)
        page.screenshot(path=str(SHOTS / f"{name}-{size['width']}x{size['height']}.png"), full_page=full_page)
    page.set_viewport_size(DESKTOP)


def drop_files(page: Any, selector: str, files: list[tuple[str, str, bytes]]) -> None:
    """Drag-and-drop files onto an element, as a person dropping them from a file manager."""
    payload = [{"name": n, "type": t, "b64": base64.b64encode(data).decode()} for n, t, data in files]
    transfer = page.evaluate_handle(
        """(files) => {
          const dt = new DataTransfer();
          for (const f of files) {
            const bytes = Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0));
            dt.items.add(new File([bytes], f.name, { type: f.type }));
          }
          return dt;
        }""",
        payload,
    )
    page.dispatch_event(selector, "dragenter", {"dataTransfer": transfer})
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def select_images(page: Any, keys: list[str]) -> None:
    """Put images into the tab's selection, as the Images page does."""
    page.evaluate(
        "(keys) => sessionStorage.setItem('bulkgen.selection', JSON.stringify(keys.map((key) => ({ key }))))",
        keys,
    )
