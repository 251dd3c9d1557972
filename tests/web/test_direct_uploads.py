"""Direct uploads (POST /api/v1/uploads/presign, PUT to storage, POST /api/v1/uploads/complete), run
against both storage backends with a real web app.

Local: the web app's own /files route takes the PUT. S3: moto on loopback, reached by the web app at
its internal address; the presigned URLs are signed for a public address where a gate checks them
as S3 does (SigV4 query signature over the signed headers, and expiry) before passing the request
to moto, because moto itself checks neither.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
import requests

from app.storage import S3Storage, Storage
from tests.conftest import System, SystemFactory
from tests.support import Api, distinct_pngs
from tests.web.conftest import DESKTOP, EMAIL, PASSWORD, drop_files, page_problems, screenshots, sign_in

S3_SECRET = "direct-secret"
S3_ACCESS = "direct-access"
BUCKET = "bulkgen-direct"


# --- an S3 front that checks presigned URLs -----------------------------------------------------


def _sigv4_problem(method: str, raw_path: str, headers: dict[str, str]) -> str | None:
    """Why S3 would refuse this presigned request, or None. AWS's documented SigV4 query auth."""
    path, _, query = raw_path.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    params = dict(pairs)
    if "X-Amz-Signature" not in params:
        return None  # header-signed requests (the web app's own) are moto's business
    signed = params["X-Amz-SignedHeaders"].split(";")
    enc = lambda v: quote(v, safe="-_.~")  # noqa: E731
    canonical_query = "&".join(f"{enc(k)}={enc(v)}" for k, v in sorted(pairs) if k != "X-Amz-Signature")
    canonical_headers = "".join(f"{h}:{' '.join(headers.get(h, '').split())}\n" for h in signed)
    canonical = "\n".join(
        [method, path, canonical_query, canonical_headers, ";".join(signed), "UNSIGNED-PAYLOAD"]
    )
    scope = params["X-Amz-Credential"].split("/", 1)[1]
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", params["X-Amz-Date"], scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = ("AWS4" + S3_SECRET).encode()
    for part in scope.split("/"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, params["X-Amz-Signature"]):
        return "SignatureDoesNotMatch"
    signed_at = datetime.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    if datetime.now(UTC) > signed_at + timedelta(seconds=int(params["X-Amz-Expires"])):
        return "AccessDenied: Request has expired"
    return None


class _Gate(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _GateHandler)
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.url = f"http://127.0.0.1:{self.server_port}"
        self.refused: list[str] = []


class _GateHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Gate

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
        self.send_response_only(status)
        for name, value in headers:
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(name, value)
        if "Origin" in self.headers and not any(n.startswith("Access-Control-") for n, _ in headers):
            self.send_header("Access-Control-Allow-Origin", self.headers["Origin"])
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        problem = _sigv4_problem(self.command, self.path, headers)
        if problem:
            self.server.refused.append(problem)
            xml = f"<Error><Code>{problem.split(':')[0]}</Code><Message>{problem}</Message></Error>"
            self._reply(403, xml.encode(), [("Content-Type", "application/xml")])
            return
        upstream = http.client.HTTPConnection(*self.server.upstream, timeout=30)
        try:
            upstream.request(self.command, self.path, body=body, headers=dict(self.headers.items()))
            response = upstream.getresponse()
            data = response.read()
        finally:
            upstream.close()
        self._reply(response.status, data, response.getheaders())

    def do_OPTIONS(self) -> None:
        # The CORS preflight of a browser's PUT, answered as a bucket with a CORS rule answers it
        # (AllowedOrigins *, AllowedMethods PUT, AllowedHeaders Content-Type).
        self._reply(
            200,
            b"",
            [
                ("Access-Control-Allow-Origin", self.headers.get("Origin", "*")),
                ("Access-Control-Allow-Methods", "PUT"),
                ("Access-Control-Allow-Headers", "content-type"),
                ("Access-Control-Max-Age", "600"),
            ],
        )

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward


@pytest.fixture(scope="module")
def gate(moto_endpoint: str) -> Iterator[_Gate]:
    server = _Gate(moto_endpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


# --- systems ------------------------------------------------------------------------------------


class Side:
    """One system (one storage backend) with two users: alice (the admin token) and bob (a member)."""

    def __init__(self, name: str, system: System, store: Storage, gate: _Gate | None = None) -> None:
        self.name = name
        self.system = system
        self.store = store
        # S3 only: what the gate refused, as S3 would have.
        self.gate = gate
        self.alice = system.api
        system.stack.flask("create-user", "bob@example.com", "--password", "bob-pw-123", "--role", "member")
        token = system.stack.flask("create-token", "bob@example.com").stdout.strip().splitlines()[-1]
        self.bob = Api(system.base_url, token)
        system.stack.flask("create-user", EMAIL, "--password", PASSWORD, "--role", "member")


@pytest.fixture(scope="module", params=["local", "s3"])
def side(request: pytest.FixtureRequest, systems: SystemFactory) -> Side:
    if request.param == "local":
        system = systems.start("direct-local", workers=())
        return Side("local", system, system.store())
    moto = request.getfixturevalue("moto_endpoint")
    front = request.getfixturevalue("gate")
    env = {
        "STORAGE_BACKEND": "s3",
        "S3_BUCKET": BUCKET,
        "S3_ENDPOINT_URL": moto,
        # What browsers reach: presigned URLs are signed for it (the gate), the app talks to moto.
        "S3_PUBLIC_ENDPOINT_URL": front.url,
        "S3_REGION": "us-east-1",
        "S3_ACCESS_KEY_ID": S3_ACCESS,
        "S3_SECRET_ACCESS_KEY": S3_SECRET,
    }
    system = systems.start("direct-s3", workers=(), env=env)
    store = S3Storage(BUCKET, moto, "us-east-1", S3_ACCESS, S3_SECRET)
    return Side("s3", system, store, front)


def presign(api: Api, files: list[tuple[str, bytes, str]], **extra: Any) -> list[dict[str, Any]]:
    body = {"files": [{"name": n, "size": len(d), "content_type": t} for n, d, t in files], **extra}
    r = api.post("/api/v1/uploads/presign", json=body)
    assert r.status_code == 200, r.text
    uploads = r.json()["uploads"]
    assert len(uploads) == len(files)
    return uploads


def put(upload: dict[str, Any], data: bytes, **headers: str) -> requests.Response:
    assert upload["method"] == "PUT"
    return requests.put(upload["url"], data=data, headers={**upload["headers"], **headers}, timeout=30)


def complete(api: Api, keys: list[str]) -> dict[str, Any]:
    r = api.post("/api/v1/uploads/complete", json={"keys": keys})
    assert r.status_code == 200, r.text
    return r.json()


# --- tests --------------------------------------------------------------------------------------


def test_presign_put_complete_keeps_images_and_deletes_the_rest(side: Side) -> None:
    pngs = distinct_pngs(3, seed=100 if side.name == "local" else 200)
    files = [
        ("cat.png", pngs[0], "image/png"),
        ("dir/dög 2.png", pngs[1], "image/png"),
        ("notes.png", b"this is text, not a picture\n", "image/png"),
        ("third.png", pngs[2], "image/png"),
    ]
    uploads = presign(side.alice, files)
    assert [u["name"] for u in uploads] == ["cat.png", "dög 2.png", "notes.png", "third.png"]
    assert all(u["headers"] == {"Content-Type": "image/png"} for u in uploads)
    assert len({u["key"] for u in uploads}) == 4
    for u, (_, data, _) in zip(uploads, files, strict=True):
        assert datetime.fromisoformat(u["expires_at"]) > datetime.now(UTC) + timedelta(minutes=14)
        r = put(u, data)
        assert r.status_code == 200, r.text
        assert side.store.get_bytes(u["key"]) == data

    keys = [u["key"] for u in uploads]
    done = complete(side.alice, keys)
    assert [a["filename"] for a in done["assets"]] == ["cat.png", "dög 2.png", "third.png"]
    assert [a["upload_key"] for a in done["assets"]] == [keys[0], keys[1], keys[3]]
    for asset, data in zip(done["assets"], pngs, strict=True):
        assert asset["key"].startswith("inputs/") and asset["sha256"] == hashlib.sha256(data).hexdigest()
        assert (asset["size"], asset["content_type"]) == (len(data), "image/png")
        assert asset["width"] >= 16 and asset["height"] >= 16
        assert side.store.get_bytes(asset["key"]) == data
    [bad] = done["rejected"]
    assert (bad["key"], bad["name"], bad["code"]) == (keys[2], "notes.png", "invalid_image")
    assert "notes.png is not an image" in bad["error"]
    # Nothing is left under the staging keys: the good ones moved, the bad one was deleted.
    assert all(side.store.head(k) is None for k in keys)
    listed = side.alice.get("/api/v1/assets", params={"prefix": "inputs/", "limit": 1000}).json()["assets"]
    assert {a["key"] for a in done["assets"]} <= {a["key"] for a in listed}

    # Pages let the browser PUT to the storage's public address (S3 elsewhere; local is the app).
    csp = requests.get(side.system.base_url + "/login", timeout=30).headers["Content-Security-Policy"]
    connect = next(p.strip() for p in csp.split(";") if p.strip().startswith("connect-src"))
    assert connect == ("connect-src 'self' " + side.gate.url if side.gate else "connect-src 'self'")

    again = complete(side.alice, keys)
    assert again["assets"] == done["assets"]
    assert [(r["key"], r["code"]) for r in again["rejected"]] == [(keys[2], "not_found")]


def test_a_put_after_the_url_expired_is_refused(side: Side) -> None:
    data = distinct_pngs(1, seed=700 + len(side.name))[0]
    [u] = presign(side.alice, [("late.png", data, "image/png")], expires_in=1)
    time.sleep(max(0.0, (datetime.fromisoformat(u["expires_at"]) - datetime.now(UTC)).total_seconds()) + 1.5)
    assert put(u, data).status_code == 403
    if side.gate:
        assert side.gate.refused[-1] == "AccessDenied: Request has expired"
    assert side.store.head(u["key"]) is None
    done = complete(side.alice, [u["key"]])
    assert done["assets"] == [] and done["rejected"][0]["code"] == "not_found"


def test_the_url_binds_content_type_and_size(side: Side) -> None:
    data = distinct_pngs(1, seed=800 + len(side.name))[0]
    [u] = presign(side.alice, [("bound.png", data, "image/png")])
    assert put(u, data, **{"Content-Type": "image/jpeg"}).status_code == 403
    assert put(u, data + b"more bytes than declared").status_code == 403
    if side.gate:
        assert side.gate.refused[-2:] == ["SignatureDoesNotMatch", "SignatureDoesNotMatch"]
    assert side.store.head(u["key"]) is None
    assert put(u, data).status_code == 200
    assert complete(side.alice, [u["key"]])["assets"][0]["filename"] == "bound.png"


def test_only_the_user_a_key_was_presigned_for_can_complete_it(side: Side) -> None:
    data = distinct_pngs(1, seed=900 + len(side.name))[0]
    [u] = presign(side.bob, [("bobs.png", data, "image/png")])
    assert put(u, data).status_code == 200

    r = side.alice.post("/api/v1/uploads/complete", json={"keys": [u["key"]]})
    assert r.status_code == 403 and r.json()["error"]["field"] == "keys[0]"
    assert side.store.get_bytes(u["key"]) == data  # untouched
    # Keys that presign did not make (here: an existing asset's) are refused too.
    existing = side.alice.upload(distinct_pngs(1, seed=950 + len(side.name)))[0]
    r = side.alice.post("/api/v1/uploads/complete", json={"keys": [existing]})
    assert r.status_code == 400 and r.json()["error"]["field"] == "keys[0]"
    forged = u["key"].replace("uploads/", "uploads/1", 1)
    r = side.bob.post("/api/v1/uploads/complete", json={"keys": [forged]})
    assert r.status_code == 403

    [asset] = complete(side.bob, [u["key"]])["assets"]
    assert asset["filename"] == "bobs.png"


# The request checks come before any storage is involved: one backend is enough.
@pytest.mark.parametrize("side", ["local"], indirect=True)
def test_presign_names_the_field_it_refuses(side: Side) -> None:
    ok = {"name": "a.png", "size": 10, "content_type": "image/png"}
    cases = [
        ({"files": [ok, {**ok, "size": 10**10}]}, "files[1].size"),
        ({"files": [{**ok, "content_type": "image/gif"}]}, "files[0].content_type"),
        ({"files": [ok, ok, {"size": 3, "content_type": "image/png"}]}, "files[2].name"),
        ({"files": [{**ok, "size": 0}]}, "files[0].size"),
        ({"files": [ok] * 1001}, "files"),
        ({"files": []}, "files"),
        ({"files": [ok], "expires_in": 10**6}, "expires_in"),
    ]
    for body, field in cases:
        r = side.alice.post("/api/v1/uploads/presign", json=body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["field"] == field
        assert field in r.json()["error"]["message"]
    assert side.alice.post("/api/v1/uploads/presign", json={"files": [ok] * 1000}).status_code == 200
    r = side.alice.post("/api/v1/uploads/complete", json={"keys": ["x"] * 101})
    assert r.status_code == 400 and r.json()["error"]["field"] == "keys"


# --- the Images page ----------------------------------------------------------------------------

_WATCH_ROWS = """() => {
  window.__sameDocument = true;
  window.__withBar = new Set();
  window.__mostAtOnce = 0;
  const look = () => {
    const bars = document.querySelectorAll('#uploads .upload .bar');
    window.__mostAtOnce = Math.max(window.__mostAtOnce, bars.length);
    for (const bar of bars) window.__withBar.add(bar.closest('.upload').dataset.name);
  };
  new MutationObserver(look).observe(document.getElementById('uploads'), { subtree: true, childList: true, attributes: true });
}"""


@pytest.fixture
def page(side: Side, chromium: Any) -> Iterator[Any]:
    """A member signed in on this side's system (its own: the shared one's image pages stay as they are)."""
    context = chromium.new_context(base_url=side.system.base_url, viewport=DESKTOP)
    context.set_default_timeout(15_000)
    page = context.new_page()
    problems = page_problems(page)
    page.goto("/login")
    sign_in(page, EMAIL, PASSWORD)
    page.wait_for_url(f"{side.system.base_url}/")
    yield page
    context.close()
    assert not problems, problems


def test_images_page_uploads_a_drop_of_60_files_straight_to_storage(page: Any, side: Side) -> None:
    """A real drop event (a DataTransfer of File objects, tests/web/conftest.py drop_files): 58 images
    and 2 non-images, PUT by the browser to the web app (local) or, cross-origin, to S3. The first
    check (complete) answers 503, so one row fails and is retried with its button."""
    pngs = distinct_pngs(58, seed=4242 + len(side.name))
    names = [f"shot-{i:02}.png" for i in range(58)]
    files = [(n, "image/png", d) for n, d in zip(names, pngs, strict=True)]
    files.insert(17, ("readme.png", "image/png", b"plain text that calls itself a PNG\n"))
    files.insert(
        40, ("paper.pdf", "application/pdf", b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n")
    )
    cut: list[str] = []

    def fail_first_check(route: Any) -> None:
        # A transient server error on the first complete: that row offers a retry.
        if not cut:
            cut.append(route.request.post_data or "")
            route.fulfill(status=503, json={"error": {"code": "unavailable", "message": "try again shortly"}})
        else:
            route.continue_()

    # Only the JSON calls are intercepted: Chromium hands an intercepted request's File body on empty.
    page.route("**/api/v1/uploads/complete", fail_first_check)
    page.goto("/images")
    start_url = page.url
    page.evaluate(_WATCH_ROWS)
    drop_files(page, "#dropzone", files)

    retry = page.locator("#uploads .upload .retry")
    retry.wait_for(timeout=60_000)
    failed = page.locator('#uploads [data-reason="failed"]')
    assert failed.get_attribute("data-name") in names + ["readme.png"]
    assert failed.locator(".state").inner_text() == "try again shortly"
    retry.click()
    page.wait_for_function(
        "() => { const s = document.getElementById('upload-summary').dataset;"
        " return s.pending === '0' && s.done === '58'; }",
        timeout=180_000,
    )
    summary = page.locator("#upload-summary")
    assert summary.get_attribute("data-rejected") == "2"
    assert summary.inner_text() == "58 of 60 uploaded · 2 rejected"

    rejected = page.locator('#uploads [data-reason="rejected"]')
    assert sorted(rejected.evaluate_all("rows => rows.map((r) => r.dataset.name)")) == [
        "paper.pdf",
        "readme.png",
    ]
    messages = rejected.locator(".state").all_inner_texts()
    assert "paper.pdf is not an image (PNG, JPEG or WEBP expected)" in messages
    assert any(m.startswith("readme.png is not an image") for m in messages), messages
    assert retry.count() == 0

    # Every image had its own progress bar, and no more than the uploads in flight had one at once.
    with_bar = set(page.evaluate("Array.from(window.__withBar)"))
    assert set(names) <= with_bar and "paper.pdf" not in with_bar
    assert 1 < page.evaluate("window.__mostAtOnce") <= 6

    # All 58 joined the grid (and the selection) without a reload.
    assert page.url == start_url and page.evaluate("window.__sameDocument") is True
    cards = page.locator(".image-card.uploaded")
    assert sorted(cards.locator(".name").all_inner_texts()) == sorted(names)
    assert int(page.locator("#selection-count").inner_text()) >= 58
    keys = cards.evaluate_all("cards => cards.map((c) => c.dataset.key)")
    assert all(k.startswith("inputs/") for k in keys) and len(set(keys)) == 58
    assets = side.alice.get("/api/v1/assets", params={"prefix": "inputs/", "limit": 1000}).json()["assets"]
    by_key = {a["key"]: a for a in assets}
    assert sorted(by_key[k]["filename"] for k in keys) == sorted(names)
    # Nothing is left in the staging area: kept ones moved, rejected ones deleted.
    assert side.store.list(prefix="uploads/")[0] == []
    screenshots(page, f"images-direct-upload-{side.name}")


def test_uploads_nobody_completed_are_swept_later(side: Side) -> None:
    from app.services.uploads import sweep_stale_uploads

    pngs = distinct_pngs(2, seed=1100 + len(side.name))
    uploads = presign(side.alice, [(f"left-{i}.png", d, "image/png") for i, d in enumerate(pngs)])
    for u, data in zip(uploads, pngs, strict=True):
        assert put(u, data).status_code == 200
    assert sweep_stale_uploads(side.store, datetime.now(UTC) - timedelta(hours=1)) == 0
    assert all(side.store.head(u["key"]) for u in uploads)
    assert sweep_stale_uploads(side.store, datetime.now(UTC) + timedelta(seconds=5)) >= 2
    assert all(side.store.head(u["key"]) is None for u in uploads)
