"""The admin pages without a browser: who gets in, CSRF, the login limit, outages, big jobs."""

from __future__ import annotations

import io
import re
import time
from typing import Any

import pytest
import requests
from PIL import Image

from bulkgen_stack.accounts import ensure_admin
from bulkgen_stack.processes import Stack, free_port
from tests.conftest import System
from tests.security.test_access import routes
from tests.support import distinct_pngs, png_bytes
from tests.web.conftest import EMAIL, PASSWORD, Browser


@pytest.fixture(scope="module")
def parked_job(ui: System) -> dict[str, Any]:
    """A job whose item waits on the sam3 queue (no worker here), so it stays queued until cancelled."""
    keys = ui.api.upload(distinct_pngs(1, seed=301))
    return ui.api.submit(keys, params={"queue": "sam3"})


def _is_login_redirect(r: requests.Response) -> bool:
    return r.status_code == 302 and r.headers["Location"].startswith("/login")


def test_every_page_and_action_sends_anonymous_visitors_to_login(
    ui: System, visitor: Browser, parked_job: dict[str, Any]
) -> None:
    job_id = parked_job["id"]
    item_id = ui.api.job(job_id)["items"][0]["id"]
    key = ui.api.job(job_id)["items"][0]["input_key"]
    pages = [
        "/",
        "/images",
        "/images?prefix=outputs/",
        f"/images/thumb/{key}",
        "/jobs",
        "/jobs/new",
        f"/jobs/{job_id}",
        f"/jobs/{job_id}/events",
        "/jobs/no-such-job",
    ]
    for path in pages:
        r = visitor.get(path)
        assert _is_login_redirect(r), (path, r.status_code, r.headers.get("Location"))
    r = visitor.get("/jobs?status=failed")
    assert r.headers["Location"] == "/login?next=/jobs?status%3Dfailed"
    actions = [
        "/jobs/new",
        f"/jobs/{job_id}/cancel",
        f"/jobs/{job_id}/retry",
        f"/items/{item_id}/retry",
        "/logout",
    ]
    for path in actions:
        r = visitor.post(path, data={"engine": "echo:echo", "inputs": [key]})
        assert _is_login_redirect(r), (path, r.status_code)
    assert ui.api.job(job_id)["status"] == "queued"
    # The API keeps answering JSON 401 to anonymous callers.
    r = visitor.post(f"/api/v1/jobs/{job_id}/cancel")
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    # The login page itself is public.
    assert visitor.get("/login").status_code == 200


def test_forms_and_session_api_posts_need_the_csrf_token(
    ui: System, admin: Browser, parked_job: dict[str, Any]
) -> None:
    job_id = parked_job["id"]
    for data in ({}, {"csrf_token": "forged"}):
        r = admin.post(f"/jobs/{job_id}/cancel", data=data)
        assert r.status_code == 403, r.status_code
        assert "text/html" in r.headers["Content-Type"]
        assert "expired or did not come from this site" in r.text
    assert ui.api.job(job_id)["status"] == "queued"

    key = ui.api.job(job_id)["items"][0]["input_key"]
    body = {"provider": "echo", "inputs": [key], "params": {"queue": "sam3"}}
    r = admin.post("/api/v1/jobs", json=body)
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "csrf_failed"
    r = admin.post("/api/v1/jobs", json=body, headers={"X-CSRF-Token": "forged"})
    assert r.status_code == 403
    token = admin.token("/jobs")
    r = admin.post("/api/v1/jobs", json=body, headers={"X-CSRF-Token": token})
    assert r.status_code == 201, r.text
    assert r.json()["created_by"] == EMAIL
    # Bearer-token calls never needed it.
    assert ui.api.post(f"/api/v1/jobs/{r.json()['id']}/cancel").status_code == 200

    # The form with the page's token goes through.
    r = admin.post(f"/jobs/{job_id}/cancel", data={"csrf_token": token})
    assert r.status_code == 302 and r.headers["Location"] == f"/jobs/{job_id}"
    assert ui.api.job(job_id)["status"] == "cancelled"

    # Signing out needs the token too, so another site cannot sign you out.
    assert admin.post("/logout").status_code == 403
    assert admin.get("/").status_code == 200
    assert admin.post("/logout", data={"csrf_token": token}).status_code == 302
    assert _is_login_redirect(admin.get("/"))


def test_every_unsafe_route_refuses_a_session_without_the_token(ui: System, admin: Browser) -> None:
    job_id = ui.api.submit(ui.api.upload(distinct_pngs(1, seed=302)), params={"queue": "sam3"})["id"]
    item = ui.api.job(job_id)["items"][0]
    unsafe = [(m, r) for m, r in routes(ui) if m in ("POST", "PUT", "PATCH", "DELETE")]
    for method, rule in unsafe:
        path = rule.replace("<job_id>", job_id).replace("<item_id>", item["id"])
        path = path.replace("<path:key>", item["input_key"]).replace("<name>", "wan_local")
        path = re.sub(r"<int:\w+>", "1", path)
        assert "<" not in path, rule
        r = admin.s.request(method, admin.base + path, allow_redirects=False, timeout=30)
        assert r.status_code == 403, (method, rule, r.status_code)
        if path.startswith("/api/"):
            assert r.json()["error"]["code"] == "csrf_failed", (method, rule)
        else:
            assert "text/html" in r.headers["Content-Type"], (method, rule)
    assert len(unsafe) >= 9, unsafe
    # Nothing happened: the job is still queued and the admin still signed in.
    assert ui.api.job(job_id)["status"] == "queued"
    assert admin.get("/").status_code == 200


def test_login_form_needs_its_token(visitor: Browser) -> None:
    visitor.token("/login")
    r = visitor.post("/login", data={"email": EMAIL, "password": PASSWORD})
    assert r.status_code == 403
    assert _is_login_redirect(visitor.get("/"))


def test_login_is_rate_limited_per_address_and_email(ui: System, visitor: Browser) -> None:
    # The harness's first admin (made by the CLI at start-up); the browser tests sign in as another user.
    email, password, _ = ensure_admin(ui.stack)
    for _ in range(10):
        r = visitor.login(email, "wrong")
        assert r.status_code == 401
        assert "Wrong email or password." in r.text
    r = visitor.login(email, password)
    assert r.status_code == 429
    assert f"Too many failed sign-ins for {email}" in r.text
    # Another account from the same address is not locked out.
    assert visitor.login().status_code == 302


def test_sign_in_returns_to_a_local_page_only(visitor: Browser) -> None:
    r = visitor.login(next_path="/jobs?status=failed")
    assert r.status_code == 302 and r.headers["Location"] == "/jobs?status=failed"
    for evil in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        other = Browser(visitor.base)
        r = other.login(next_path=evil)
        assert r.status_code == 302 and r.headers["Location"] == "/", evil


def test_error_pages_are_html_and_the_api_stays_json(ui: System, admin: Browser) -> None:
    r = admin.get("/jobs/no-such-job")
    assert r.status_code == 404 and "text/html" in r.headers["Content-Type"]
    assert "There is no job no-such-job." in r.text and 'class="nav"' in r.text
    r = admin.get("/no/such/page")
    assert r.status_code == 404 and "Not found" in r.text
    r = admin.get("/api/v1/jobs/no-such-job")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = ui.api.get("/api/v1/no-such-endpoint")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = admin.get("/files/inputs/aa/forged.png?exp=1&sig=00")
    assert r.status_code == 403 and "Not allowed" in r.text and "text/html" in r.headers["Content-Type"]


def test_a_member_uses_the_pages_but_not_the_admin_ones(ui: System) -> None:
    # Each role against every route: tests/security/test_roles.py.
    ui.stack.flask("create-user", "viewer@example.com", "--password", "viewer-password-1", "--role", "member")
    viewer = Browser(ui.base_url)
    assert viewer.login("viewer@example.com", "viewer-password-1").status_code == 302
    assert viewer.get("/").status_code == 200
    assert viewer.get("/jobs/new").status_code == 200
    r = viewer.get("/users")
    assert r.status_code == 403
    assert "This page is for admins" in r.text


def test_thumbnails_are_made_once_kept_in_storage_and_served_signed(ui: System, admin: Browser) -> None:
    key = ui.api.upload([png_bytes(900, 600, (30, 60, 90))], ["wide.png"])[0]
    r = admin.get(f"/images/thumb/{key}")
    assert r.status_code == 302
    location = r.headers["Location"]
    assert location.startswith(f"{ui.base_url}/files/thumbs/{key}.jpg?") and "sig=" in location
    thumb = requests.get(location, timeout=30)
    assert thumb.status_code == 200 and thumb.headers["Content-Type"] == "image/jpeg"
    with Image.open(io.BytesIO(thumb.content)) as img:
        assert img.size == (256, 171)
    stored = ui.store().head(f"thumbs/{key}.jpg")
    assert stored is not None
    assert admin.get(f"/images/thumb/{key}").status_code == 302
    assert ui.store().head(f"thumbs/{key}.jpg").modified == stored.modified, "the thumbnail was made again"
    assert requests.get(location.replace("sig=", "sig=0"), timeout=30).status_code == 403
    assert admin.get("/images/thumb/inputs/aa/missing.png").status_code == 404


def test_thousand_item_job_page_renders_one_page_of_items(admin: Browser, big_job: dict[str, Any]) -> None:
    started = time.monotonic()
    r = admin.get(f"/jobs/{big_job['id']}")
    elapsed = time.monotonic() - started
    assert r.status_code == 200
    rows = re.findall(r'<tr id="item-[^"]+" data-item-id="([^"]+)"', r.text)
    assert len(rows) == 100
    assert "Items 1–100 of 1000" in r.text and "Page 1 of 10" in r.text
    assert elapsed < 3, f"the page took {elapsed:.2f} s"
    last = admin.get(f"/jobs/{big_job['id']}?page=10")
    assert "Items 901–1000 of 1000" in last.text and "Page 10 of 10" in last.text
    indexes = re.findall(r'<td data-label="#" class="num">(\d+)</td>', last.text)
    assert indexes[0] == "900" and indexes[-1] == "999" and len(indexes) == 100


@pytest.fixture(scope="module")
def outage_stacks(ui: System, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Stack]:
    """Web processes of the ui system's database with a dead broker, and with a dead database."""
    stacks: dict[str, Stack] = {}
    for name, override in (
        ("no-broker", {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}),
        ("no-database", {"DATABASE_URL": f"postgresql://nobody@127.0.0.1:{free_port()}/gone"}),
    ):
        env = {k: v for k, v in ui.env.items() if k not in ("PUBLIC_URL", "WEB_PORT")}
        env.update(override)
        port = free_port()
        env["PUBLIC_URL"] = f"http://127.0.0.1:{port}"
        stack = Stack(var_dir=tmp_path_factory.mktemp(name), env=env, web_port=port)
        stack.start_web(workers=1, threads=4)
        stacks[name] = stack
    yield stacks
    for stack in stacks.values():
        stack.stop_all()


def test_broker_outage_shows_a_notice_and_keeps_jobs(ui: System, outage_stacks: dict[str, Stack]) -> None:
    client = Browser(f"http://127.0.0.1:{outage_stacks['no-broker'].web_port}")
    assert client.login().status_code == 302
    r = client.get("/")  # answered (within the client's timeout), not hung on the broker
    assert r.status_code == 200
    assert "The broker (Redis) is unreachable" in r.text
    key = ui.api.upload(distinct_pngs(1, seed=302))[0]
    token = client.token("/jobs/new")
    r = client.post(
        "/jobs/new",
        data={"csrf_token": token, "engine": "echo:echo", "inputs": [key], "p:echo:echo:queue": "sam3"},
    )
    assert r.status_code == 302, r.text
    job_id = r.headers["Location"].split("/jobs/")[1].split("?")[0]
    page = client.get(f"/jobs/{job_id}?created=1")
    assert "the broker is unreachable right now" in page.text
    # The job is in the database, pending; the real system's reconciler publishes it.
    assert ui.api.wait(job_id, timeout=30, statuses=("queued",))["total"] == 1
    ui.api.post(f"/api/v1/jobs/{job_id}/cancel")


def test_database_outage_shows_a_page_not_a_stack_trace(outage_stacks: dict[str, Stack]) -> None:
    client = Browser(f"http://127.0.0.1:{outage_stacks['no-database'].web_port}")
    r = client.login()
    assert r.status_code == 503
    assert "text/html" in r.headers["Content-Type"]
    assert "The database is unreachable" in r.text
    assert "Traceback" not in r.text and "psycopg2" not in r.text
    r = client.s.get(
        client.base + "/api/v1/jobs", headers={"Authorization": "Bearer bg_whatever"}, timeout=30
    )
    assert r.status_code == 503 and r.json()["error"]["code"] == "database_unavailable"


def test_form_text_the_database_cannot_store_is_a_400_page(ui: System, admin: Browser) -> None:
    key = ui.api.upload(distinct_pngs(1, seed=303))[0]
    before = len(ui.api.get("/api/v1/jobs", params={"limit": 500}).json()["jobs"])
    token = admin.token("/jobs/new")
    r = admin.post(
        "/jobs/new",
        data={"csrf_token": token, "engine": "echo:echo", "inputs": [key], "prompt": "a\x00b"},
    )
    assert r.status_code == 400 and "text/html" in r.headers["Content-Type"], r.status_code
    assert "contains a NUL character" in r.text
    assert len(ui.api.get("/api/v1/jobs", params={"limit": 500}).json()["jobs"]) == before
