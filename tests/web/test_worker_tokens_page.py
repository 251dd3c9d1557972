"""The worker tokens page: an admin creates a token for a GPU host (shown once) and revokes it."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
import requests

from tests.conftest import System
from tests.web.conftest import Browser


def _hello(ui: System, token: str) -> int:
    r = requests.get(
        f"{ui.base_url}/api/v1/worker/hello", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    return r.status_code


def test_admin_creates_lists_and_revokes_a_worker_token(ui: System, admin: Browser) -> None:
    csrf = admin.token("/worker-tokens")
    page = admin.post("/worker-tokens", data={"csrf_token": csrf, "name": "page-host-7"})
    assert page.status_code == 200
    token = re.search(r'id="new-worker-token">([^<]+)<', page.text).group(1)  # type: ignore[union-attr]
    assert token.startswith("bgw_") and _hello(ui, token) == 200
    listing = admin.get("/worker-tokens").text
    # Listed by name and prefix; the token itself is never shown again.
    assert 'data-worker-token="page-host-7"' in listing and token not in listing and token[:10] in listing
    row = listing.split('data-worker-token="page-host-7"', 1)[1].split("</tr>", 1)[0]
    action = html.unescape(re.search(r'action="([^"]+/revoke)"', row).group(1))  # type: ignore[union-attr]
    assert admin.post(action, data={"csrf_token": csrf}).status_code == 302
    assert (
        "revoked"
        in admin.get("/worker-tokens").text.split('data-worker-token="page-host-7"', 1)[1].split("</tr>")[0]
    )
    assert _hello(ui, token) == 401


def test_a_name_is_required(admin: Browser) -> None:
    csrf = admin.token("/worker-tokens")
    page = admin.post("/worker-tokens", data={"csrf_token": csrf, "name": "  "})
    assert page.status_code == 400 and "needs a name" in page.text


@pytest.mark.browser
def test_the_page_in_a_browser_shows_a_new_token_once(page: Any) -> None:
    from tests.web.conftest import screenshots

    page.goto("/worker-tokens")
    page.fill('input[name="name"]', "browser-host-3")
    page.click('button:text("Create")')
    token = page.locator("#new-worker-token").inner_text()
    assert token.startswith("bgw_")
    assert page.locator('[data-worker-token="browser-host-3"]').count() == 1
    screenshots(page, "worker-tokens")
    page.goto("/worker-tokens")
    assert token not in page.content(), "the token is shown only once"
