"""Who may do what (docs/reliability.md, "Access model"): every route against every role.

ACCESS holds one decision per endpoint of the web app; the route list is read from the app's own
url_map, so a route added without a decision (or one removed without updating the table) fails
test_every_route_has_an_access_decision before anything else runs.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from bulkgen_stack.accounts import ensure_admin
from tests.conftest import System, SystemFactory
from tests.support import Api, distinct_pngs
from tests.web.conftest import Browser

# The rules. READ: any signed-in user and any user token (pages: the session only). SUBMIT: any
# user; a read-only token is refused. OWN: the resource's owner (alice here) or an admin; another
# member is refused. ADMIN: admins only. PUBLIC: anyone. SIGNED: a valid signature, whoever asks.
# METRICS: any user token (or basic auth). WORKER: a worker token and nothing else. SIGN_OUT: ends
# the session, if any, and sends everyone to the login page.
PUBLIC, SIGNED, METRICS, WORKER, SIGN_OUT = "public", "signed", "metrics", "worker", "sign-out"
READ, SUBMIT, OWN, ADMIN = "read", "submit", "own", "admin"

ACCESS: dict[str, str] = {
    "static": PUBLIC,
    "health.healthz": PUBLIC,
    "health.readyz": PUBLIC,
    "admin.login": PUBLIC,
    "files.serve": SIGNED,
    "files.upload": SIGNED,
    "metrics.metrics": METRICS,
    "worker_api.hello": WORKER,
    "worker_api.grant_read": WORKER,
    "worker_api.grant_write": WORKER,
    # pages
    "admin.logout": SIGN_OUT,
    "admin.dashboard": READ,
    "admin.images": READ,
    "admin.thumbnail": READ,
    "admin.new_job": SUBMIT,
    "admin.new_job_prompts": SUBMIT,
    "admin.new_job_estimate": READ,
    "admin.jobs": READ,
    "admin.job_page": READ,
    "admin.job_rows": READ,
    "admin.job_events": READ,
    "admin.cancel_job": OWN,
    "admin.pause_job": OWN,
    "admin.resume_job": OWN,
    "admin.schedule_job": OWN,
    "admin.retry_job": OWN,
    "admin.retry_item": OWN,
    "admin.redeliver_webhook": OWN,
    "admin.account": READ,
    "admin.rotate_webhook_secret": SUBMIT,
    "admin.create_api_token": SUBMIT,
    "admin.revoke_api_token": OWN,
    "admin.pause_queue": ADMIN,
    "admin.resume_queue": ADMIN,
    "admin.users": ADMIN,
    "admin.add_user": ADMIN,
    "admin.change_role": ADMIN,
    "admin.change_active": ADMIN,
    "admin.worker_token_list": ADMIN,
    "admin.add_worker_token": ADMIN,
    "admin.revoke_worker_token_view": ADMIN,
    "admin.workers": ADMIN,
    "admin.drain_worker": ADMIN,
    # the JSON API
    "api.upload": SUBMIT,
    "api.presign_uploads": SUBMIT,
    "api.complete_uploads": SUBMIT,
    "api.upload_prompts_file": SUBMIT,
    "api.list_assets": READ,
    "api.create_job": SUBMIT,
    "api.list_jobs": READ,
    "api.get_job": READ,
    "api.update_job": OWN,
    "api.job_stream": READ,
    "api.changes_stream": READ,
    "api.job_events": READ,
    "api.cancel_job": OWN,
    "api.pause_job": OWN,
    "api.resume_job": OWN,
    "api.retry_job": OWN,
    "api.retry_item": OWN,
    "api.get_item": READ,
    "api.download_job": READ,
    "api.job_webhooks": READ,
    "api.redeliver_webhook": OWN,
    "api.account": READ,
    "api.rotate_webhook_secret": SUBMIT,
    "api.stats": READ,
    "api.queues": READ,
    "api.pause_queue": ADMIN,
    "api.resume_queue": ADMIN,
    "api.providers": READ,
    "api.openapi": READ,
}

# What an actor should get.
ALLOW, LOGIN, UNAUTHORIZED, FORBIDDEN, READ_ONLY, REFUSED = (
    "allow",
    "login",
    "401",
    "403 forbidden",
    "403 read-only",
    "403",
)
# Actors that are a user: the signed-in session opens pages, the user's token the API.
USERS = {"alice": "alice", "bob": "bob", "admin": "admin", "alice_reader": "alice", "admin_reader": "admin"}
ACTORS = ("anonymous", "alice", "bob", "admin", "alice_reader", "admin_reader", "worker")
READ_METHODS = ("GET", "HEAD", "OPTIONS")


def expected(rule: str, actor: str, method: str, api: bool) -> str:
    if rule == PUBLIC:
        return ALLOW
    if rule == SIGNED:
        return REFUSED
    if rule == SIGN_OUT:
        return LOGIN
    if rule == WORKER:
        return ALLOW if actor == "worker" else UNAUTHORIZED
    if rule == METRICS:
        return ALLOW if actor in USERS else UNAUTHORIZED
    # A read-only token, a worker token or no credentials at all open no page; tokens only the API.
    user = USERS.get(actor)
    if user is None or (not api and actor.endswith("_reader")):
        return UNAUTHORIZED if api else LOGIN
    if actor.endswith("_reader") and method not in READ_METHODS:
        return READ_ONLY
    if rule in (READ, SUBMIT):
        return ALLOW
    if rule == OWN:
        return ALLOW if user in ("alice", "admin") else FORBIDDEN
    assert rule == ADMIN, rule
    return ALLOW if user == "admin" else FORBIDDEN


def endpoints(system: System) -> list[tuple[str, str, str]]:
    """Every (method, rule, endpoint) the web app serves, read from the app itself."""
    code = (
        "import json, web; app = web.create_app(); "
        "print(json.dumps([[m, r.rule, r.endpoint] for r in app.url_map.iter_rules() "
        "for m in sorted(r.methods - {'HEAD', 'OPTIONS'})]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=system.env, capture_output=True, text=True, check=True
    )
    return [tuple(x) for x in json.loads(out.stdout.strip().splitlines()[-1])]


@dataclass
class World:
    system: System
    tokens: dict[str, str]
    sessions: dict[str, Browser]
    job_id: str
    item_id: str
    input_key: str
    carol_id: int
    alice_spare_token_id: int
    csrf: dict[str, str] = field(default_factory=dict)

    def path(self, rule: str, endpoint: str) -> str:
        # alice's spare API token; no other token id exists (the worker token the test uses stays).
        token_id = self.alice_spare_token_id if endpoint == "admin.revoke_api_token" else 999_999
        path = rule.replace("<job_id>", self.job_id).replace("<item_id>", self.item_id)
        path = path.replace("<path:key>", self.input_key).replace("<path:filename>", "app.css")
        path = path.replace("<int:delivery_id>", "1").replace("<name>", "sam3")
        path = path.replace("<int:user_id>", str(self.carol_id))
        path = path.replace("<int:token_id>", str(token_id))
        assert "<" not in path, f"no test value for a parameter of {rule}"
        return path


def _token(system: System, email: str, *args: str) -> str:
    return system.stack.flask("create-token", email, *args).stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def world(systems: SystemFactory) -> Iterator[World]:
    # Stopped with the module: a system left running holds Postgres connections the suite needs.
    before = len(systems.started)
    # Event streams end after STREAM_MAX_S, so a streamed answer is short.
    sysm = systems.start("roles", workers=("control",), env={"STREAM_MAX_S": "2"})
    admin_email, admin_password, admin_token = ensure_admin(sysm.stack)
    for name in ("alice", "bob", "carol"):
        sysm.stack.flask(
            "create-user", f"{name}@example.com", "--password", f"{name}-pw-123", "--role", "member"
        )
    tokens = {
        "admin": admin_token,
        "alice": _token(sysm, "alice@example.com"),
        "bob": _token(sysm, "bob@example.com"),
        "alice_reader": _token(sysm, "alice@example.com", "--scope", "read", "--name", "dashboard"),
        "admin_reader": _token(sysm, admin_email, "--scope", "read"),
    }
    tokens["worker"] = sysm.stack.flask("create-worker-token", "roles-host").stdout.strip().splitlines()[-1]
    spare = _token(sysm, "alice@example.com", "--name", "spare")

    alice = Api(sysm.base_url, tokens["alice"])
    key = alice.upload(distinct_pngs(1, seed=1401))[0]
    # Parked on the sam3 queue, which has no worker here: the job stays unfinished.
    job = alice.submit([key], params={"queue": "sam3"})
    assert job["created_by"] == "alice@example.com"
    item = alice.job(job["id"])["items"][0]

    engine = sa.create_engine(sysm.env["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg2://", 1))
    with engine.connect() as conn:
        carol_id = conn.execute(
            sa.text("SELECT id FROM users WHERE email = 'carol@example.com'")
        ).scalar_one()
        spare_id = conn.execute(
            sa.text("SELECT id FROM api_tokens WHERE prefix = :p"), {"p": spare[:10]}
        ).scalar_one()
    engine.dispose()

    sessions = {}
    for actor, (email, password) in {
        "alice": ("alice@example.com", "alice-pw-123"),
        "bob": ("bob@example.com", "bob-pw-123"),
        "admin": (admin_email, admin_password),
    }.items():
        browser = Browser(sysm.base_url)
        assert browser.login(email, password).status_code == 302
        sessions[actor] = browser
    world = World(sysm, tokens, sessions, job["id"], item["id"], key, carol_id, spare_id)
    world.csrf = {actor: b.token("/account") for actor, b in sessions.items()}
    yield world
    systems.stop_since(before)


def _ask(world: World, actor: str, method: str, path: str) -> requests.Response:
    api = path.startswith("/api/") or path == "/metrics"
    url = world.system.base_url + path
    headers: dict[str, str] = {}
    data: dict[str, Any] | None = None
    session = requests.Session()
    if api or actor not in world.sessions:
        if actor in world.tokens:
            headers["Authorization"] = f"Bearer {world.tokens[actor]}"
    else:
        session = world.sessions[actor].s
        if method not in READ_METHODS:
            data = {"csrf_token": world.csrf[actor]}
    # Bodies that a permitted caller gets a 4xx for at worst: only the decision is tested here.
    return session.request(
        method, url, headers=headers, data=data, allow_redirects=False, timeout=60, stream=True
    )


def _outcome(r: requests.Response) -> str:
    kind = r.headers.get("Content-Type", "")
    if r.status_code in (301, 302, 303) and r.headers.get("Location", "").startswith("/login"):
        return LOGIN
    if r.status_code == 401:
        return UNAUTHORIZED
    if r.status_code == 403 and "application/json" in kind:
        code = r.json()["error"]["code"]
        return {"forbidden": FORBIDDEN, "read_only_token": READ_ONLY}.get(code, f"403 {code}")
    if r.status_code == 403 and "text/html" in kind and "admin" in r.text:
        return FORBIDDEN  # the 403 page names who may (a CSRF refusal, say, does not)
    if r.status_code >= 400 and r.status_code not in (400, 404, 405, 409, 413):
        return str(r.status_code)
    return ALLOW


def _browser(world: World, email: str, password: str) -> Browser:
    browser = Browser(world.system.base_url)
    assert browser.login(email, password).status_code == 302
    return browser


def _admin(world: World) -> Browser:
    email, password, _ = ensure_admin(world.system.stack)
    return _browser(world, email, password)


def test_pages_show_the_role_and_offer_members_only_what_they_may_do(world: World) -> None:
    alice = _browser(world, "alice@example.com", "alice-pw-123")
    bob = _browser(world, "bob@example.com", "bob-pw-123")
    admin = _admin(world)
    cancel_form = f'action="/jobs/{world.job_id}/cancel"'

    own = alice.get(f"/jobs/{world.job_id}").text
    assert cancel_form in own and 'id="job-schedule"' in own and "View only" not in own
    theirs = bob.get(f"/jobs/{world.job_id}").text
    assert cancel_form not in theirs and 'id="job-schedule"' not in theirs
    assert "View only: alice@example.com" in theirs and 'data-can-change=""' in theirs
    assert cancel_form in admin.get(f"/jobs/{world.job_id}").text

    for browser, role in ((bob, "member"), (admin, "admin")):
        dashboard = browser.get("/").text
        assert f'<span class="role-badge" id="user-role">{role}</span>' in dashboard
        assert ('href="/users"' in dashboard) == (role == "admin")
        assert ('action="/queues/sam3/pause"' in dashboard) == (role == "admin")
        assert f'<dd id="account-role">{role}</dd>' in browser.get("/account").text
    r = bob.get("/users")
    assert r.status_code == 403 and "This page is for admins" in r.text
    # A member submits through the pages like anyone: the new job is theirs to change.
    form = {"csrf_token": bob.token("/jobs/new"), "engine": "echo:echo", "inputs": [world.input_key]}
    r = bob.post("/jobs/new", data={**form, "p:echo:echo:queue": "sam3"})
    assert r.status_code == 302, r.text
    job_id = r.headers["Location"].split("/jobs/")[1].split("?")[0]
    r = bob.post(f"/jobs/{job_id}/cancel", data={"csrf_token": form["csrf_token"]})
    assert r.status_code == 302 and r.headers["Location"] == f"/jobs/{job_id}"
    assert Api(world.system.base_url, world.tokens["bob"]).job(job_id)["status"] == "cancelled"


def test_a_member_session_on_the_api_follows_the_same_rules(world: World) -> None:
    bob = _browser(world, "bob@example.com", "bob-pw-123")
    headers = {"X-CSRF-Token": bob.token("/jobs")}
    r = bob.post(f"/api/v1/jobs/{world.job_id}/pause", headers=headers)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert "alice@example.com" in r.json()["error"]["message"]
    r = bob.post("/api/v1/queues/sam3/pause", headers=headers)
    assert r.status_code == 403 and r.json()["error"]["message"] == "only an admin may do this"
    body = {"provider": "echo", "inputs": [world.input_key], "params": {"queue": "sam3"}}
    r = bob.post("/api/v1/jobs", json=body, headers=headers)
    assert r.status_code == 201 and r.json()["created_by"] == "bob@example.com"
    r = bob.post(f"/api/v1/jobs/{r.json()['id']}/cancel", headers=headers)
    assert r.status_code == 200 and r.json()["job"]["status"] == "cancelled"
    account = bob.get("/api/v1/account").json()
    assert (
        account["role"] == "member" and account["is_admin"] is False and account["token_scope"] == "session"
    )


def test_read_only_tokens_read_and_every_write_is_refused(world: World) -> None:
    reader = Api(world.system.base_url, world.tokens["alice_reader"])
    account = reader.get("/api/v1/account").json()
    assert (account["email"], account["role"], account["token_scope"]) == (
        "alice@example.com",
        "member",
        "read",
    )
    assert reader.get(f"/api/v1/jobs/{world.job_id}").status_code == 200
    r = reader.post(f"/api/v1/jobs/{world.job_id}/cancel")
    assert r.status_code == 403
    assert r.json()["error"] == {
        "code": "read_only_token",
        "message": "this token is read-only: it may only read (GET); use a token with the write scope",
    }
    r = reader.s.patch(reader.url(f"/api/v1/jobs/{world.job_id}"), json={"priority": "high"}, timeout=30)
    assert r.status_code == 403 and r.json()["error"]["code"] == "read_only_token"
    assert reader.get(f"/api/v1/jobs/{world.job_id}").json()["priority"] == "normal"

    # Made on the account page: shown once, listed by prefix, revocable there.
    alice = _browser(world, "alice@example.com", "alice-pw-123")
    csrf = alice.token("/account")
    page = alice.post("/account/tokens", data={"csrf_token": csrf, "name": "grafana", "scope": "read"})
    assert page.status_code == 200
    token = re.search(r'id="new-token">(bg_[^<]+)<', page.text).group(1)  # type: ignore[union-attr]
    assert token not in alice.get("/account").text and token[:10] in alice.get("/account").text
    made = Api(world.system.base_url, token)
    assert made.get("/api/v1/account").json()["token_scope"] == "read"
    assert made.post("/api/v1/uploads").json()["error"]["code"] == "read_only_token"
    r = alice.post("/account/tokens", data={"csrf_token": csrf, "name": "x", "scope": "root"})
    assert r.status_code == 400 and "Choose a scope" in r.text
    token_id = re.search(rf'data-token-id="(\d+)">\s*<td data-label="Token"><code>{token[:10]}', page.text)
    assert token_id, page.text
    # Bob cannot revoke alice's token; alice can.
    bob = _browser(world, "bob@example.com", "bob-pw-123")
    r = bob.post(f"/account/tokens/{token_id.group(1)}/revoke", data={"csrf_token": bob.token("/account")})
    assert r.status_code == 403
    assert made.get("/api/v1/account").status_code == 200
    r = alice.post(f"/account/tokens/{token_id.group(1)}/revoke", data={"csrf_token": csrf})
    assert r.status_code == 302
    assert made.get("/api/v1/account").status_code == 401


def test_admins_add_promote_and_deactivate_users_on_the_users_page(world: World) -> None:
    admin = _admin(world)
    csrf = admin.token("/users")
    page = admin.post("/users", data={"csrf_token": csrf, "email": "Dave@Example.com", "role": "member"})
    assert page.status_code == 200
    password = re.search(r'id="new-password">([^<]+)<', page.text).group(1)  # type: ignore[union-attr]
    again = admin.post("/users", data={"csrf_token": csrf, "email": "dave@example.com", "role": "admin"})
    assert again.status_code == 400 and "already has an account" in again.text
    dave = _browser(world, "dave@example.com", password)
    assert dave.get("/users").status_code == 403
    dave_id = re.search(r'action="/users/(\d+)/role"', page.text[page.text.index("dave@example.com") :])
    assert dave_id, page.text
    user_url = f"/users/{dave_id.group(1)}"

    assert admin.post(f"{user_url}/role", data={"csrf_token": csrf, "role": "admin"}).status_code == 302
    assert dave.get("/users").status_code == 200
    assert admin.post(f"{user_url}/role", data={"csrf_token": csrf, "role": "member"}).status_code == 302
    assert dave.get("/users").status_code == 403

    token = _token(world.system, "dave@example.com")
    assert Api(world.system.base_url, token).get("/api/v1/jobs").status_code == 200
    assert admin.post(f"{user_url}/active", data={"csrf_token": csrf, "active": "0"}).status_code == 302
    assert dave.get("/jobs").headers.get("Location", "").startswith("/login")
    assert Api(world.system.base_url, token).get("/api/v1/jobs").status_code == 401
    assert dave.login("dave@example.com", password).status_code == 401
    assert admin.post(f"{user_url}/active", data={"csrf_token": csrf, "active": "1"}).status_code == 302
    assert Api(world.system.base_url, token).get("/api/v1/jobs").status_code == 200

    # An admin cannot demote or deactivate themselves, so one admin always remains.
    own_id = sa_user_id(world, ensure_admin(world.system.stack)[0])
    for action, data in (("role", {"role": "member"}), ("active", {"active": "0"})):
        r = admin.post(f"/users/{own_id}/{action}", data={"csrf_token": csrf, **data})
        assert r.status_code == 403 and "ask another admin" in r.text
    assert admin.get("/users").status_code == 200


def sa_user_id(world: World, email: str) -> int:
    engine = sa.create_engine(
        world.system.env["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg2://", 1)
    )
    with engine.connect() as conn:
        user_id = conn.execute(sa.text("SELECT id FROM users WHERE email = :e"), {"e": email}).scalar_one()
    engine.dispose()
    return int(user_id)


def test_the_cli_makes_members_and_read_only_tokens(world: World) -> None:
    stack = world.system.stack
    out = stack.flask(
        "create-user", "erin@example.com", "--password", "erin-pw-123", "--role", "member"
    ).stdout
    assert "erin@example.com ready (member)" in out
    # Resetting a password keeps the role: no accidental promotion.
    assert "(member)" in stack.flask("create-user", "erin@example.com", "--password", "erin-pw-456").stdout
    assert "is admin" in stack.flask("set-role", "erin@example.com", "admin").stdout
    assert "(admin)" in stack.flask("create-user", "erin@example.com").stdout
    with pytest.raises(subprocess.CalledProcessError) as err:
        stack.flask("create-user", "frank@example.com", "--role", "owner")
    assert "owner" in err.value.stderr
    token = _token(world.system, "erin@example.com", "--scope", "read")
    account = Api(world.system.base_url, token).get("/api/v1/account").json()
    assert (account["role"], account["token_scope"]) == ("admin", "read")
    assert "\tread\t" in stack.flask("list-tokens", "erin@example.com").stdout


def test_every_route_has_an_access_decision(world: World) -> None:
    served = {endpoint for _, _, endpoint in endpoints(world.system)}
    assert served - set(ACCESS) == set(), "routes without an access decision: add them to ACCESS"
    assert set(ACCESS) - served == set(), "ACCESS names routes the app no longer has"


def test_every_route_answers_each_role_as_the_access_model_says(world: World) -> None:
    routes = endpoints(world.system)
    # Signing out ends the sessions the other requests ride on: last.
    routes.sort(key=lambda r: r[2] == "admin.logout")
    wrong = []
    seen: set[str] = set()
    checked = 0
    for method, rule, endpoint in routes:
        decision = ACCESS[endpoint]
        if decision == PUBLIC and method != "GET":
            continue  # a failed sign-in would count against the login throttle
        path = world.path(rule, endpoint)
        api = path.startswith("/api/")
        for actor in ACTORS:
            want = expected(decision, actor, method, api)
            with _ask(world, actor, method, path) as r:
                got = REFUSED if want == REFUSED and r.status_code == 403 else _outcome(r)
                seen.add(got)
                if got != want:
                    wrong.append(
                        f"{actor} {method} {rule} ({endpoint}): want {want}, got {r.status_code} {got}"
                    )
            checked += 1
    assert not wrong, "\n".join(wrong)
    assert checked >= len(ACTORS) * 50
    # Every kind of answer came up, so the table is not all "allow".
    assert seen == {ALLOW, LOGIN, UNAUTHORIZED, FORBIDDEN, READ_ONLY, REFUSED}, seen
    Api(world.system.base_url, world.tokens["admin"]).post("/api/v1/queues/sam3/resume")
