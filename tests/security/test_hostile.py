"""Hostile input: each finding of the black-box pass in issue 14, sent as it was found, against the real
system (gunicorn, Postgres, Redis, workers). docs/reliability.md, "Hostile input", lists them."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import unicodedata
import uuid
import zipfile
from collections.abc import Iterator
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
import requests
import sqlalchemy as sa
from PIL import Image
from requests.adapters import HTTPAdapter

from tests.conftest import EXTERNAL_DB, System, SystemFactory
from tests.support import Api, distinct_pngs, png_bytes
from web.ratelimit import PER_ADDRESS, PER_ADDRESS_AND_ACCOUNT

PASSWORD = "right-password-7"


class FromAddress(HTTPAdapter):
    """Connections from a given loopback address: a client on another machine, as the server sees it
    (the app trusts no forwarding header, so a real source address is the only way to be another)."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


class Visitor:
    """A browser without JavaScript: the login form with its CSRF token, from one client address."""

    def __init__(self, base_url: str, address: str = "127.0.0.1") -> None:
        self.base = base_url
        self.s = requests.Session()
        self.s.mount("http://", FromAddress(address))

    def csrf(self) -> str:
        html = self.s.get(self.base + "/login", timeout=30).text
        match = re.search(r'name="csrf-token" content="([^"]+)"', html)
        assert match, "no CSRF token on the login page"
        return match.group(1)

    def login(self, email: str, password: str, next_path: str = "") -> requests.Response:
        return self.s.post(
            self.base + "/login",
            data={"csrf_token": self.csrf(), "email": email, "password": password, "next": next_path},
            allow_redirects=False,
            timeout=30,
        )

    def get(self, path: str) -> requests.Response:
        return self.s.get(self.base + path, allow_redirects=False, timeout=30)


def make_user(system: System, email: str) -> None:
    system.stack.flask("create-user", email, "--password", PASSWORD)


def error_of(r: requests.Response, status: int) -> dict[str, str]:
    assert r.status_code == status, (r.status_code, r.text[:500])
    assert r.headers["Content-Type"].startswith("application/json"), r.headers["Content-Type"]
    return r.json()["error"]


def limit_of(rule: str) -> int:
    return int(rule.split()[0])


# --- 3. login: `next` never leaves the site --------------------------------------------------------

# Each a `next` value as it appears in the query string: all must land on this site.
EVIL_NEXT = [
    "/%09/evil.example",  # the finding: a browser drops the tab and goes to //evil.example
    "/%0a/evil.example",
    "/%0d%0a/evil.example",
    "%09//evil.example",
    "/%5Cevil.example",
    "%5C%5Cevil.example",
    "//evil.example",
    "///evil.example",
    "https://evil.example/",
    "https:/evil.example",
    "javascript:alert(1)",
    "/%E2%80%AE/evil.example",
    "%20//evil.example",
]


def _stays_on_site(system: System, r: requests.Response) -> str:
    assert r.status_code == 302, r.status_code
    location = r.headers["Location"]
    # What a browser would follow: tabs and newlines dropped, a backslash read as a slash.
    as_browser = re.sub(r"[\t\n\r]", "", location).replace("\\", "/")
    target = urlsplit(urljoin(system.base_url + "/login", as_browser))
    assert target.netloc == urlsplit(system.base_url).netloc, location
    assert "evil" not in location, location
    return location


def test_login_next_never_leaves_the_site(system: System) -> None:
    email = f"next-{uuid.uuid4().hex[:8]}@example.com"
    make_user(system, email)
    for raw in EVIL_NEXT:
        # On POST: the form sends `next` back as the login page received it.
        visitor = Visitor(system.base_url, "127.0.0.8")
        page = visitor.get(f"/login?next={raw}")
        assert page.status_code == 200
        sent = re.search(r'name="next" value="([^"]*)"', page.text)
        assert sent is not None
        r = visitor.login(email, PASSWORD, next_path=requests.utils.unquote(raw))
        assert _stays_on_site(system, r) == "/", raw
        # On GET when already signed in: /login?next=... redirects at once.
        r = visitor.get(f"/login?next={raw}")
        assert _stays_on_site(system, r) == "/", raw
    # A local page is still where signing in returns to.
    visitor = Visitor(system.base_url, "127.0.0.8")
    r = visitor.login(email, PASSWORD, next_path="/jobs?status=failed")
    assert r.headers["Location"] == "/jobs?status=failed"
    assert visitor.get("/login?next=/images%3Fprefix%3Doutputs/").headers["Location"] == (
        "/images?prefix=outputs/"
    )


# --- 3. login throttling ---------------------------------------------------------------------------


def test_wrong_passwords_from_one_address_do_not_lock_out_the_owner_elsewhere(system: System) -> None:
    email = f"victim-{uuid.uuid4().hex[:8]}@example.com"
    make_user(system, email)
    attacker = Visitor(system.base_url, "127.0.0.2")
    for _ in range(limit_of(PER_ADDRESS_AND_ACCOUNT)):
        r = attacker.login(email, "guess-" + uuid.uuid4().hex[:6])
        assert r.status_code == 401 and "Wrong email or password." in r.text
    # The attacker's address is now refused for this account, even with the right password ...
    r = attacker.login(email, PASSWORD)
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) > 0
    assert f"Too many failed sign-ins for {email}" in r.text and 'name="password"' in r.text
    # ... while the owner, from another address, signs in.
    owner = Visitor(system.base_url, "127.0.0.3")
    r = owner.login(email, PASSWORD)
    assert r.status_code == 302 and r.headers["Location"] == "/"


def test_password_spraying_from_one_address_is_throttled(system: System) -> None:
    sprayer = Visitor(system.base_url, "127.0.0.4")
    run = uuid.uuid4().hex[:6]
    answers = [sprayer.login(f"sprayed-{run}-{n}@example.com", "Winter2026!") for n in range(20)]
    codes = [r.status_code for r in answers]
    allowed = limit_of(PER_ADDRESS)
    # One wrong password per account: only the per-address count can stop this.
    assert codes == [401] * allowed + [429] * (20 - allowed), codes
    throttled = answers[-1]
    assert int(throttled.headers["Retry-After"]) > 0
    assert "Too many failed sign-ins from your address" in throttled.text
    assert "text/html" in throttled.headers["Content-Type"]
    # Another address is not held back by it.
    assert Visitor(system.base_url, "127.0.0.5").login(f"sprayed-{run}-0@example.com", "x").status_code == 401


def test_sign_in_limits_hold_without_redis(systems: SystemFactory) -> None:
    """Redis gone: no 500, and each web process still counts in its own memory (Flask-Limiter's
    fallback). gunicorn runs two processes, so 2 x limit + 1 failures must meet a 429."""
    sysm = systems.start("login-no-redis", workers=())
    try:
        email = "fallback@example.com"
        sysm.stack.flask("create-user", email, "--password", PASSWORD)
        sysm.stack.stop("redis")
        visitor = Visitor(sysm.base_url, "127.0.0.6")
        codes = [
            visitor.login(email, "wrong").status_code
            for _ in range(2 * limit_of(PER_ADDRESS_AND_ACCOUNT) + 1)
        ]
        assert set(codes) <= {401, 429} and 429 in codes, codes
        assert Visitor(sysm.base_url, "127.0.0.7").login(email, PASSWORD).status_code == 302
        assert '" 500 ' not in sysm.stack.procs["web"].log()
    finally:
        systems.stop_since(systems.started.index(sysm))


# --- 4. request limits -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def key(system: System) -> str:
    return system.api.upload(distinct_pngs(1, seed=1401))[0]


def test_a_30_mb_prompt_is_refused_before_it_is_read(system: System, api: Api, key: str) -> None:
    # Each hostile body on a connection of its own: the server may close one whose body it did not read.
    url = system.base_url + "/api/v1/jobs"
    auth = {"Authorization": f"Bearer {system.token}"}
    body = {"provider": "echo", "inputs": [key], "prompt": "x" * (30 * 1024 * 1024)}
    err = error_of(requests.post(url, json=body, headers=auth, timeout=60), 413)
    assert err["code"] == "too_large" and "MAX_JSON_BYTES" in err["message"]

    # The same without a Content-Length (chunked) is refused too: Werkzeug reads no such body from a
    # server that does not say it ends the stream (gunicorn: a 400), and cuts it off at the limit
    # from one that does (a 413).
    def chunks() -> Iterator[bytes]:
        yield b'{"provider": "echo", "inputs": ["' + key.encode() + b'"], "prompt": "'
        for _ in range(4):
            yield b"y" * (1024 * 1024)
        yield b'"}'

    headers = {**auth, "Content-Type": "application/json"}
    r = requests.post(url, data=chunks(), headers=headers, timeout=60)
    assert error_of(r, r.status_code)["code"] in ("invalid_json", "request_entity_too_large")
    # Nothing was stored: the job list stays small.
    listing = api.get("/api/v1/jobs", params={"limit": 500})
    assert listing.status_code == 200 and len(listing.content) < 1024 * 1024


def test_uploads_keep_their_own_larger_limit(api: Api) -> None:
    noise = Image.frombytes("RGB", (800, 600), os.urandom(800 * 600 * 3))
    buf = io.BytesIO()
    noise.save(buf, format="PNG")
    assert len(buf.getvalue()) > 1024 * 1024
    assert len(api.upload([buf.getvalue()], ["noise.png"])) == 1


def test_prompts_longer_than_the_provider_takes_are_refused(api: Api, key: str) -> None:
    providers = {p["name"]: p for p in api.get("/api/v1/providers").json()["providers"]}
    assert providers["runway"]["max_prompt_chars"] == 1000
    for name, provider in providers.items():
        limit = provider["max_prompt_chars"]
        if provider["prompt_field"] == "prompts":
            body = {"provider": name, "inputs": [key], "prompts": ["cat", "c" * (limit + 1)]}
            field = "prompts"
        else:
            body = {"provider": name, "inputs": [key], "prompt": "p" * (limit + 1)}
            field = "prompt"
        err = error_of(api.post("/api/v1/jobs", json=body), 400)
        assert err["field"] == field and str(limit) in err["message"], (name, err)
    wan_limit = providers["wan_local"]["max_prompt_chars"]
    body = {"provider": "wan_local", "inputs": [key], "params": {"negative_prompt": "n" * (wan_limit + 1)}}
    assert error_of(api.post("/api/v1/jobs", json=body), 400)["field"] == "params.negative_prompt"
    # Exactly the limit is taken.
    echo_limit = providers["echo"]["max_prompt_chars"]
    r = api.post("/api/v1/jobs", json={"provider": "echo", "inputs": [key], "prompt": "e" * echo_limit})
    assert r.status_code == 201 and len(r.json()["prompt"]) == echo_limit


def test_long_uris_are_answered_with_json_on_the_api(system: System, api: Api) -> None:
    # Over the app's limit (MAX_URI_BYTES, 4096): the app answers.
    err = error_of(api.get("/api/v1/jobs?status=" + "a" * 5000), 414)
    assert err["code"] == "uri_too_long"
    # Over gunicorn's own limit (8190): gunicorn answers, in JSON too.
    err = error_of(api.get("/api/v1/jobs?status=" + "a" * 9000), 414)
    assert err["code"] == "uri_too_long"
    # Pages get the error page; shorter URIs are answered as usual.
    r = requests.get(system.base_url + "/jobs?status=" + "a" * 5000, timeout=30, allow_redirects=False)
    assert r.status_code == 414 and "text/html" in r.headers["Content-Type"]
    # (`provider` is free text; `status` must be one of the job statuses.)
    assert api.get("/api/v1/jobs?provider=" + "a" * 3000).status_code == 200


# --- 5. upload file names --------------------------------------------------------------------------

HOSTILE_NAMES = [
    "a\u202egnp.exe\u0000.png",  # the finding: NUL and a right-to-left override
    "../../etc/passwd.png",
    "C:\\Windows\\evil.png",
    "line\r\nbreak.png",
    "\u200b\u2066.png",
    "x" * 1000 + ".png",
    "con:aux?.png",
]


def _clean(name: str) -> bool:
    return (
        0 < len(name) <= 200
        and "/" not in name
        and "\\" not in name
        and not any(unicodedata.category(c)[0] == "C" for c in name)
    )


def test_hostile_upload_names_are_kept_cleaned(system: System, api: Api) -> None:
    images = distinct_pngs(len(HOSTILE_NAMES), seed=1402)
    files = [("files", (name, data, "image/png")) for name, data in zip(HOSTILE_NAMES, images, strict=True)]
    r = api.post("/api/v1/uploads", files=files)
    assert r.status_code == 201, r.text[:500]
    assets = r.json()["assets"]
    names = [a["filename"] for a in assets]
    assert names[0] == "agnp.exe.png"
    assert all(_clean(n) for n in names), names
    assert names[1] == "passwd.png"
    assert len(names[5]) == 200 and names[5].endswith(".png")
    # Each object is in storage and has its record.
    store = system.store()
    for asset in assets:
        assert store.exists(asset["key"])
    folder = assets[0]["key"].rsplit("/", 1)[0] + "/"
    listed = api.get("/api/v1/assets", params={"prefix": folder, "limit": 1000}).json()["assets"]
    assert {a["key"]: a["filename"] for a in listed}[assets[0]["key"]] == "agnp.exe.png"

    # The zip names each result after its input's cleaned name.
    job = api.wait(api.submit([assets[0]["key"]])["id"])
    assert job["status"] == "succeeded"
    archive = zipfile.ZipFile(io.BytesIO(api.get(f"/api/v1/jobs/{job['id']}/download").content))
    assert archive.namelist() == ["agnp.exe.png", "manifest.csv"]


@pytest.mark.skipif(not EXTERNAL_DB, reason="fails the commit with a Postgres constraint trigger")
def test_an_upload_whose_record_fails_leaves_no_object(system: System, api: Api) -> None:
    # The database refuses the record at COMMIT, after the object was written: a real failure at the
    # worst moment, made by the database itself.
    engine = sa.create_engine(system.env["DATABASE_URL"])
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                """
                CREATE OR REPLACE FUNCTION refuse_commit_fails() RETURNS trigger AS $$
                BEGIN
                  IF NEW.filename = 'commit-fails.png' THEN RAISE EXCEPTION 'refused at commit'; END IF;
                  RETURN NEW;
                END $$ LANGUAGE plpgsql
                """
            )
        )
        conn.execute(
            sa.text(
                "CREATE CONSTRAINT TRIGGER refuse_commit_fails AFTER INSERT ON assets "
                "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_commit_fails()"
            )
        )
    data = png_bytes(33, 17, (201, 14, 77))
    digest = hashlib.sha256(data).hexdigest()
    key = f"inputs/{digest[:2]}/{digest}.png"
    try:
        r = api.post("/api/v1/uploads", files=[("files", ("commit-fails.png", data, "image/png"))])
        assert r.status_code >= 500 and r.headers["Content-Type"].startswith("application/json")
        assert not system.store().exists(key)
        with engine.connect() as conn:
            assert (
                conn.execute(sa.text("SELECT count(*) FROM assets WHERE key = :k"), {"k": key}).scalar() == 0
            )
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TRIGGER IF EXISTS refuse_commit_fails ON assets"))
            conn.execute(sa.text("DROP FUNCTION IF EXISTS refuse_commit_fails()"))
        engine.dispose()
    # The same bytes under another name go through: record and object both.
    assert api.upload([data], ["commit-works.png"]) == [key]
    assert system.store().exists(key)


# --- 6. idempotency --------------------------------------------------------------------------------


def test_an_idempotency_key_reused_with_another_body_is_a_409(system: System, api: Api, key: str) -> None:
    idem = f"hostile-{uuid.uuid4().hex[:8]}"
    body = {"provider": "echo", "inputs": [key], "prompt": "first", "idempotency_key": idem}
    first = api.post("/api/v1/jobs", json=body)
    assert first.status_code == 201
    job_id = first.json()["id"]
    # The same body again (keys in another order): the first job, as before.
    reordered = dict(reversed(list(body.items())))
    assert list(reordered) != list(body)
    again = api.post("/api/v1/jobs", data=json.dumps(reordered), headers={"Content-Type": "application/json"})
    assert again.status_code == 200 and again.json()["id"] == job_id
    # Another body with the same key: a 409 naming the key, and no second job.
    err = error_of(api.post("/api/v1/jobs", json={**body, "prompt": "second"}), 409)
    assert err["code"] == "idempotency_conflict" and err["field"] == "idempotency_key"
    assert idem in err["message"]
    err = error_of(api.post("/api/v1/jobs", json={**body, "params": {"delay_s": 1}}), 409)
    assert idem in err["message"]
    assert api.post("/api/v1/jobs", json=body).json()["id"] == job_id

    # A job made before request bodies were remembered (request_hash NULL) matches any body.
    engine = sa.create_engine(system.env["DATABASE_URL"])
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE jobs SET request_hash = NULL WHERE id = :id"), {"id": job_id})
    engine.dispose()
    old = api.post("/api/v1/jobs", json={**body, "prompt": "second"})
    assert old.status_code == 200 and old.json()["id"] == job_id
