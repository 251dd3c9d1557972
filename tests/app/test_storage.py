"""One behavioural test set, run against both storage backends.

S3 runs against moto's ThreadedMotoServer (real HTTP on loopback). moto checks neither presigned
URL signatures nor their expiry, so tampering and expiry are tested on the local backend only.
The local backend's signed URLs are served by a tiny WSGI app that does what the web app's
`/files/<key>` route does: verify_signature, then stream the object.
"""

from __future__ import annotations

import http.client
import os
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from app import config as config_mod
from app import storage as storage_mod
from app.storage import (
    InvalidCursor,
    InvalidKey,
    LocalStorage,
    NotFound,
    ObjectInfo,
    S3Storage,
    Storage,
    content_disposition,
    validate_key,
)
from app.storage_factory import get_storage

BAD_KEYS = [
    "",
    "../x",
    "a/../b",
    "a/./b",
    "..",
    "/abs",
    "a/",
    "a//b",
    "a\\b",
    "a b",
    "a\x00b",
    "a\nb",
    "caf\u00e9",
    "x" * 513,
    "a/" + "y" * 256,
]

# -- servers (once per session) -------------------------------------------------------------------------


class _FilesApp:
    """Stands in for the web app's /files/<key> route: the storage under test is swapped per test."""

    def __init__(self) -> None:
        self.store: LocalStorage | None = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self.handle(Request(environ))(environ, start_response)

    def handle(self, req: Request) -> Response:
        store = self.store
        if store is None or not req.path.startswith("/files/"):
            return Response("not found", status=404)
        key = req.path[len("/files/") :]
        args = req.args
        filename = args.get("filename")
        content_type = args.get("content_type")
        if not store.verify_signature(
            key,
            req.method,
            args.get("exp", ""),
            args.get("sig", ""),
            filename=filename,
            content_type=content_type,
        ):
            return Response("forbidden", status=403)
        if req.method == "PUT":
            sent_type = req.headers.get("Content-Type")
            if content_type is not None and sent_type != content_type:
                return Response("content type does not match the signed one", status=403)
            store.put_bytes(key, req.get_data(), sent_type or "application/octet-stream")
            return Response("", status=200)
        info = store.head(key)
        if info is None:
            return Response("not found", status=404)
        headers = {"Content-Disposition": content_disposition(filename)} if filename else {}
        return Response(store.get_bytes(key), content_type=info.content_type, headers=headers)


@pytest.fixture(scope="session")
def files_server() -> Iterator[tuple[str, _FilesApp]]:
    app = _FilesApp()
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", app
    server.shutdown()
    thread.join()


# Hop-by-hop headers: they describe one connection, so the proxy answers them itself.
_HOP_HEADERS = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "expect"}


@dataclass(frozen=True)
class _Seen:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased, as they arrived on the wire
    connection: tuple[str, int]  # the client's address: one per TCP connection


class _RecordingProxy(ThreadingHTTPServer):
    """A reverse proxy in front of moto that records every request the storage sends over the wire."""

    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.url = f"http://127.0.0.1:{self.server_port}"
        self.lock = threading.Lock()
        self.seen: list[_Seen] = []
        # Send only half of the next GET's body, then hang up (a connection lost mid-download).
        self.cut_next_get = False
        # Answer this many PUTs 503 after taking their body, as an overloaded S3 does.
        self.fail_puts = 0

    def take(self) -> list[_Seen]:
        """The requests recorded since the last call."""
        with self.lock:
            seen, self.seen = self.seen, []
        return seen


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, and "100 Continue" answered if a client asks for it
    server: _RecordingProxy

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _forward(self) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        assert "transfer-encoding" not in headers, "the proxy only handles Content-Length bodies"
        body = self.rfile.read(int(headers.get("content-length", "0")))
        with self.server.lock:
            self.server.seen.append(_Seen(self.command, self.path, headers, self.client_address))
            cut = self.command == "GET" and self.server.cut_next_get
            if cut:
                self.server.cut_next_get = False
            refuse = self.command == "PUT" and self.server.fail_puts > 0
            if refuse:
                self.server.fail_puts -= 1
        if refuse:
            error = b"<Error><Code>ServiceUnavailable</Code><Message>Slow down.</Message></Error>"
            self.send_response_only(503)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(error)))
            self.end_headers()
            self.wfile.write(error)
            return
        upstream = http.client.HTTPConnection(*self.server.upstream, timeout=30)
        try:
            forward = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
            upstream.request(self.command, self.path, body=body, headers=forward)
            response = upstream.getresponse()
            data = response.read()
        finally:
            upstream.close()
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in _HOP_HEADERS | {"content-length"}:
                self.send_header(name, value)
        length = response.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
        if length is not None:
            self.send_header("Content-Length", length)
        self.end_headers()
        if self.command == "HEAD":
            return
        if cut:
            self.wfile.write(data[: len(data) // 2])
            self.close_connection = True
            return
        self.wfile.write(data)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward


@pytest.fixture(scope="session")
def recording_proxy(moto_endpoint: str) -> Iterator[_RecordingProxy]:
    proxy = _RecordingProxy(moto_endpoint)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    yield proxy
    proxy.shutdown()
    proxy.server_close()
    thread.join()


# -- the backends ---------------------------------------------------------------------------------------


@pytest.fixture
def local_store(tmp_path: Path, files_server: tuple[str, _FilesApp]) -> Iterator[LocalStorage]:
    base_url, app = files_server
    store = LocalStorage(root=tmp_path / "storage", base_url=base_url, secret="test-secret")
    app.store = store
    yield store
    app.store = None


def _s3(endpoint: str, **kw: Any) -> S3Storage:
    params: dict[str, Any] = {
        "bucket": f"test-{uuid.uuid4().hex[:12]}",
        "endpoint_url": endpoint,
        "region": "us-east-1",
        "access_key": "testing",
        "secret_key": "testing",
    }
    params.update(kw)
    return S3Storage(**params)


@pytest.fixture(scope="session")
def s3_bucket(moto_endpoint: str) -> str:
    store = _s3(moto_endpoint)
    store.ensure_bucket()
    return store.bucket


@pytest.fixture
def s3_store(moto_endpoint: str, s3_bucket: str) -> S3Storage:
    # One bucket, a fresh prefix per test: creating a bucket in moto costs more than most tests.
    # The prefix also proves keys are namespaced inside the bucket and stripped again on the way out.
    return _s3(moto_endpoint, bucket=s3_bucket, prefix=f"t-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def proxied(recording_proxy: _RecordingProxy, s3_bucket: str) -> tuple[S3Storage, _RecordingProxy]:
    """An S3 storage that reaches moto through the recording proxy, its bucket check already done."""
    store = _s3(recording_proxy.url, bucket=s3_bucket, prefix=f"t-{uuid.uuid4().hex[:12]}")
    store.ensure_bucket()
    recording_proxy.take()
    return store, recording_proxy


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest) -> Storage:
    return request.getfixturevalue(f"{request.param}_store")


# -- behaviour shared by both backends ------------------------------------------------------------------


def test_put_get_head_exists_delete(store: Storage) -> None:
    key = "outputs/j1/i1/1/video.mp4"
    assert not store.exists(key)
    assert store.head(key) is None
    store.put_bytes(key, b"hello world", "video/mp4")
    assert store.exists(key)
    assert store.get_bytes(key) == b"hello world"
    info = store.head(key)
    assert isinstance(info, ObjectInfo)
    assert (info.key, info.size, info.content_type) == (key, 11, "video/mp4")
    assert isinstance(info.modified, datetime) and info.modified.tzinfo is not None
    assert abs(info.modified.timestamp() - time.time()) < 120
    store.delete(key)
    assert not store.exists(key)
    store.delete(key)  # deleting a missing object is not an error


def test_missing_object(store: Storage, tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        store.get_bytes("inputs/nope.png")
    with pytest.raises(FileNotFoundError):
        store.open_stream("inputs/nope.png")
    dest = tmp_path / "dl" / "nope.png"
    with pytest.raises(NotFound):
        store.download_to("inputs/nope.png", dest)
    assert not dest.exists()
    assert list((tmp_path / "dl").iterdir()) == []  # no partial download left behind


def test_overwrite_replaces_bytes_and_type(store: Storage) -> None:
    store.put_bytes("a/b.bin", b"one", "application/octet-stream")
    store.put_bytes("a/b.bin", b"second", "text/plain")
    assert store.get_bytes("a/b.bin") == b"second"
    info = store.head("a/b.bin")
    assert info is not None and (info.size, info.content_type) == (6, "text/plain")


def test_put_file_download_to_and_stream(store: Storage, tmp_path: Path) -> None:
    data = bytes(range(256)) * 8192  # 2 MiB
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    store.put_file("outputs/j/i/1/big.bin", src, "application/octet-stream")
    dest = tmp_path / "deep" / "dir" / "out.bin"
    store.download_to("outputs/j/i/1/big.bin", dest)
    assert dest.read_bytes() == data
    with store.open_stream("outputs/j/i/1/big.bin") as stream:
        chunks = []
        while block := stream.read(100_000):
            chunks.append(block)
    assert b"".join(chunks) == data


def test_empty_object(store: Storage) -> None:
    store.put_bytes("empty.txt", b"", "text/plain")
    assert store.get_bytes("empty.txt") == b""
    info = store.head("empty.txt")
    assert info is not None and info.size == 0


def _parallel(fn: Any, items: list[str]) -> None:
    # Hundreds of sequential round trips to moto dominate the suite's runtime otherwise.
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(fn, items))


def _all_pages(store: Storage, prefix: str, limit: int) -> tuple[list[list[str]], list[str | None]]:
    pages: list[list[str]] = []
    cursors: list[str | None] = []
    cursor: str | None = None
    while True:
        objects, cursor = store.list(prefix=prefix, cursor=cursor, limit=limit)
        pages.append([o.key for o in objects])
        cursors.append(cursor)
        if cursor is None:
            return pages, cursors
        assert len(pages) < 50, "paging does not terminate"


def test_list_pages_with_cursor(store: Storage) -> None:
    keys = [f"inputs/{i % 7:02d}/{i:04d}.png" for i in range(250)]
    _parallel(lambda key: store.put_bytes(key, b"x", "image/png"), keys)
    store.put_bytes("outputs/j1/i1/1/manifest.json", b"{}", "application/json")

    pages, cursors = _all_pages(store, "inputs/", 100)
    assert [len(p) for p in pages] == [100, 100, 50]
    assert cursors[-1] is None and all(isinstance(c, str) for c in cursors[:-1])
    assert [k for page in pages for k in page] == sorted(keys)

    objects, _ = store.list(prefix="inputs/", limit=3)
    assert [(o.size, o.content_type) for o in objects] == [(1, "image/png")] * 3

    everything, _ = _all_pages(store, "", 1000)
    assert everything == [sorted([*keys, "outputs/j1/i1/1/manifest.json"])]


def test_list_prefix_is_a_string_prefix_in_key_order(store: Storage) -> None:
    # "-" and "." sort before "/": a directory walk must still come out in plain string order.
    # (No key is also a prefix of another: the local backend maps keys onto a directory tree.)
    keys = ["p/a-b", "p/a.c", "p/a/x", "p/a/y/z", "p/a0", "p/ab", "p/b", "q/a"]
    for key in reversed(keys):
        store.put_bytes(key, key.encode(), "text/plain")
    for limit in (1, 2, 3, 100):
        pages, _ = _all_pages(store, "p/", limit)
        assert [k for page in pages for k in page] == sorted(k for k in keys if k.startswith("p/"))
    assert [o.key for o in store.list(prefix="p/a")[0]] == sorted(k for k in keys if k.startswith("p/a"))
    assert [o.key for o in store.list(prefix="p/a/")[0]] == ["p/a/x", "p/a/y/z"]
    assert store.list(prefix="nothing/") == ([], None)


def test_list_and_delete_prefix_reject_bad_prefixes(store: Storage) -> None:
    for bad in ("../", "/x", "a//", "a\\"):
        with pytest.raises(InvalidKey):
            store.list(prefix=bad)
        with pytest.raises(InvalidKey):
            store.delete_prefix(bad)
    with pytest.raises(InvalidKey):
        store.delete_prefix("")  # never wipe a whole store by accident
    with pytest.raises(ValueError):
        store.list(limit=0)


def test_delete_prefix(store: Storage) -> None:
    for i in range(5):
        store.put_bytes(f"outputs/j1/i{i}/1/out.png", b"x", "image/png")
    store.put_bytes("outputs/j10/i0/1/out.png", b"x", "image/png")
    store.put_bytes("outputs/j2/i0/1/out.png", b"x", "image/png")
    assert store.delete_prefix("outputs/j1/") == 5
    assert [o.key for o in store.list("outputs/")[0]] == [
        "outputs/j10/i0/1/out.png",
        "outputs/j2/i0/1/out.png",
    ]
    assert store.delete_prefix("outputs/j1/") == 0
    store.put_bytes("outputs/j1/i0/1/out.png", b"again", "image/png")  # the emptied prefix can be reused
    assert store.get_bytes("outputs/j1/i0/1/out.png") == b"again"


@pytest.mark.parametrize("bad", BAD_KEYS)
def test_every_method_rejects_bad_keys(store: Storage, bad: str, tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"x")
    calls = [
        lambda: store.put_bytes(bad, b"x", "text/plain"),
        lambda: store.put_file(bad, src, "text/plain"),
        lambda: store.get_bytes(bad),
        lambda: store.download_to(bad, tmp_path / "out"),
        lambda: store.open_stream(bad),
        lambda: store.exists(bad),
        lambda: store.head(bad),
        lambda: store.delete(bad),
        lambda: store.signed_url(bad),
    ]
    for call in calls:
        with pytest.raises(InvalidKey):
            call()


def test_bad_content_type_refused(store: Storage) -> None:
    with pytest.raises(ValueError):
        store.put_bytes("a.txt", b"x", "text/plain\r\nX-Evil: 1")
    with pytest.raises(ValueError):
        store.put_bytes("a.txt", b"x", "")


def test_signed_get_url_serves_the_bytes(store: Storage) -> None:
    data = b"\x89PNG fake image bytes"
    store.put_bytes("inputs/ab/abc.png", data, "image/png")
    url = store.signed_url("inputs/ab/abc.png", expires_s=60)
    r = requests.get(url, timeout=10)
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["Content-Type"].startswith("image/png")


def test_signed_get_url_with_download_name(store: Storage) -> None:
    store.put_bytes("outputs/j/i/1/video.mp4", b"video", "video/mp4")
    url = store.signed_url("outputs/j/i/1/video.mp4", filename='cat "jump" \u00e9t\u00e9.mp4')
    r = requests.get(url, timeout=10)
    assert r.status_code == 200 and r.content == b"video"
    disposition = r.headers["Content-Disposition"]
    assert disposition.startswith("attachment;")
    assert 'filename="cat _jump_ _t_.mp4"' in disposition
    assert "filename*=UTF-8''cat%20%22jump%22%20%C3%A9t%C3%A9.mp4" in disposition


def test_signed_put_url_uploads(store: Storage) -> None:
    url = store.signed_url("uploads/new.png", method="PUT", content_type="image/png", expires_s=60)
    r = requests.put(url, data=b"uploaded", headers={"Content-Type": "image/png"}, timeout=10)
    assert r.status_code == 200, r.text
    assert store.get_bytes("uploads/new.png") == b"uploaded"
    info = store.head("uploads/new.png")
    assert info is not None and info.content_type == "image/png"


def test_signed_url_arguments_checked(store: Storage) -> None:
    for kwargs in ({"expires_s": 0}, {"expires_s": 8 * 24 * 3600}, {"method": "DELETE"}):
        with pytest.raises(ValueError):
            store.signed_url("a.txt", **kwargs)


def test_check_passes(store: Storage) -> None:
    store.check()


# -- local backend only ---------------------------------------------------------------------------------


def _query(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    return parts.path.removeprefix("/files/"), {k: v[0] for k, v in parse_qs(parts.query).items()}


def test_local_url_shape(local_store: LocalStorage) -> None:
    url = local_store.signed_url("outputs/j/i/1/a.png", expires_s=60, filename="a.png")
    assert url.startswith(f"{local_store.base_url}/files/outputs/j/i/1/a.png?exp=")
    key, q = _query(url)
    assert set(q) == {"exp", "sig", "filename"}
    assert int(q["exp"]) - time.time() == pytest.approx(60, abs=5)
    assert local_store.verify_signature(key, "GET", q["exp"], q["sig"], filename=q["filename"])


def test_local_tampered_urls_refused(local_store: LocalStorage) -> None:
    local_store.put_bytes("outputs/j/i/1/a.png", b"secret", "image/png")
    local_store.put_bytes("outputs/j/i/1/b.png", b"other", "image/png")
    url = local_store.signed_url("outputs/j/i/1/a.png", expires_s=60, filename="a.png")
    key, q = _query(url)
    exp, sig, name = q["exp"], q["sig"], q["filename"]
    verify = local_store.verify_signature
    assert verify(key, "GET", exp, sig, filename=name)
    flipped = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    assert not verify(key, "GET", exp, flipped, filename=name)
    assert not verify("outputs/j/i/1/b.png", "GET", exp, sig, filename=name)
    assert not verify(key, "GET", str(int(exp) + 3600), sig, filename=name)
    assert not verify(key, "GET", exp, sig, filename="other.png")
    assert not verify(key, "GET", exp, sig)  # dropping the download name is a change too
    assert not verify(key, "PUT", exp, sig, filename=name)
    assert not verify(key, "GET", exp, sig.upper(), filename=name)
    assert not verify(key, "GET", "soon", sig, filename=name)
    assert not verify("../etc/passwd", "GET", exp, sig, filename=name)
    assert not verify(key, "GET", exp, "", filename=name)
    other = LocalStorage(local_store.root.parent / "other", local_store.base_url, secret="another-secret")
    assert not other.verify_signature(key, "GET", exp, sig, filename=name)

    assert requests.get(url, timeout=10).content == b"secret"
    assert requests.get(url.replace("sig=" + sig, "sig=" + flipped), timeout=10).status_code == 403
    assert requests.get(url.replace("/a.png?", "/b.png?"), timeout=10).status_code == 403
    assert requests.get(url.replace(f"exp={exp}", f"exp={int(exp) + 1}"), timeout=10).status_code == 403


def test_local_expired_url_refused(local_store: LocalStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    local_store.put_bytes("a.txt", b"x", "text/plain")
    url = local_store.signed_url("a.txt", expires_s=30)
    key, q = _query(url)
    assert local_store.verify_signature(key, "GET", q["exp"], q["sig"])
    later = time.time() + 31
    monkeypatch.setattr(storage_mod.time, "time", lambda: later)
    assert not local_store.verify_signature(key, "GET", q["exp"], q["sig"])
    assert requests.get(url, timeout=10).status_code == 403


def test_local_put_url_binds_content_type(local_store: LocalStorage) -> None:
    url = local_store.signed_url("u/x.png", method="PUT", content_type="image/png")
    r = requests.put(url, data=b"x", headers={"Content-Type": "text/html"}, timeout=10)
    assert r.status_code == 403
    tampered = url.replace("content_type=image%2Fpng", "content_type=text%2Fhtml")
    assert tampered != url
    assert (
        requests.put(tampered, data=b"x", headers={"Content-Type": "text/html"}, timeout=10).status_code
        == 403
    )
    get_url = local_store.signed_url("u/x.png")
    assert requests.put(get_url, data=b"x", timeout=10).status_code == 403  # a GET URL does not allow PUT
    assert not local_store.exists("u/x.png")


def test_local_layout_is_atomic_and_contained(local_store: LocalStorage, tmp_path: Path) -> None:
    local_store.put_bytes("inputs/ab/abc.png", b"img", "image/png")
    root = local_store.root
    assert (root / "objects" / "inputs" / "ab" / "abc.png").read_bytes() == b"img"
    assert list((root / "tmp").iterdir()) == []  # temp files are renamed into place, none left over
    local_store.delete("inputs/ab/abc.png")
    assert list((root / "objects").iterdir()) == []  # emptied directories are pruned
    assert list((root / "meta").iterdir()) == []
    (tmp_path / "outside.txt").write_text("not yours")
    with pytest.raises(InvalidKey):
        local_store.get_bytes("../../outside.txt")


def test_local_head_without_sidecar_guesses_type(local_store: LocalStorage) -> None:
    path = local_store.root / "objects" / "dropped" / "clip.mp4"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"by hand")
    info = local_store.head("dropped/clip.mp4")
    assert info is not None and (info.size, info.content_type) == (7, "video/mp4")


def test_local_key_that_is_also_a_prefix(local_store: LocalStorage) -> None:
    local_store.put_bytes("a/b", b"x", "text/plain")
    with pytest.raises(storage_mod.StorageError):
        local_store.put_bytes("a", b"y", "text/plain")
    assert local_store.head("a") is None
    with pytest.raises(NotFound):
        local_store.get_bytes("a")


def test_local_invalid_cursor(local_store: LocalStorage) -> None:
    for bad in ("!!!", "Li4vZXRj", "%%"):
        with pytest.raises(InvalidCursor):
            local_store.list(cursor=bad)


def test_local_concurrent_writers_never_expose_partial_objects(local_store: LocalStorage) -> None:
    payloads = [bytes([i]) * 200_000 for i in range(8)]
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(data: bytes) -> None:
        try:
            for _ in range(10):
                local_store.put_bytes("race/obj.bin", data, "application/octet-stream")
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread
            errors.append(exc)

    def reader() -> None:
        while not stop.is_set():
            try:
                data = local_store.get_bytes("race/obj.bin")
            except NotFound:
                continue
            if data not in payloads:
                errors.append(AssertionError("partial object seen"))

    threads = [threading.Thread(target=writer, args=(p,)) for p in payloads]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    watcher.join()
    assert errors == []


def test_local_needs_a_secret(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        LocalStorage(tmp_path, "http://x", secret="")


# -- S3 backend only ------------------------------------------------------------------------------------


def test_s3_creates_bucket_lazily_and_namespaces_keys(moto_endpoint: str) -> None:
    s3_store = _s3(moto_endpoint, prefix="/deploy-a/")
    with pytest.raises(Exception):  # noqa: B017 - botocore's NoSuchBucket: reads never create the bucket
        s3_store.get_bytes("inputs/a.png")
    s3_store.put_bytes("inputs/a.png", b"x", "image/png")
    raw = s3_store._client.list_objects_v2(Bucket=s3_store.bucket)
    assert [o["Key"] for o in raw["Contents"]] == ["deploy-a/inputs/a.png"]
    assert [o.key for o in s3_store.list()[0]] == ["inputs/a.png"]
    s3_store.ensure_bucket()  # idempotent


def test_s3_public_endpoint_used_for_signing(moto_endpoint: str) -> None:
    public = moto_endpoint.replace("127.0.0.1", "localhost")
    store = _s3(moto_endpoint, public_endpoint_url=public)
    store.put_bytes("inputs/a.png", b"pixels", "image/png")
    url = store.signed_url("inputs/a.png", expires_s=60)
    assert url.startswith(f"{public}/{store.bucket}/inputs/a.png?")  # path-style on the public host
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=60" in url
    assert requests.get(url, timeout=10).content == b"pixels"


def test_s3_check_fails_for_missing_bucket(moto_endpoint: str) -> None:
    store = _s3(moto_endpoint)
    with pytest.raises(Exception):  # noqa: B017 - botocore's ClientError; readiness only needs "raises"
        store.check()
    store.ensure_bucket()
    store.check()


def test_s3_page_larger_than_one_list_call(s3_store: S3Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    # Real S3 caps a call at 1000 keys; a cap of 7 exercises the same loop without 1000 uploads.
    monkeypatch.setattr(s3_store, "max_keys_per_call", 7)
    keys = [f"k/{i:03d}" for i in range(40)]
    _parallel(lambda key: s3_store.put_bytes(key, b"", "text/plain"), keys)
    objects, cursor = s3_store.list(prefix="k/", limit=25)
    assert [o.key for o in objects] == keys[:25] and cursor is not None
    objects, cursor = s3_store.list(prefix="k/", cursor=cursor, limit=25)
    assert [o.key for o in objects] == keys[25:] and cursor is None
    assert s3_store.delete_prefix("k/") == 40


def _object_path(store: S3Storage, key: str) -> str:
    return f"/{store.bucket}/{store.prefix}{key}"


def test_s3_reads_are_one_get_each(proxied: tuple[S3Storage, _RecordingProxy], tmp_path: Path) -> None:
    store, proxy = proxied
    data = bytes(range(256)) * 4096  # 1 MiB
    store.put_bytes("inputs/a.png", data, "image/png")
    proxy.take()
    store.download_to("inputs/a.png", tmp_path / "in" / "a.png")
    assert (tmp_path / "in" / "a.png").read_bytes() == data
    assert store.get_bytes("inputs/a.png") == data
    seen = proxy.take()
    assert [(r.method, urlsplit(r.path).path) for r in seen] == [
        ("GET", _object_path(store, "inputs/a.png"))
    ] * 2


def test_s3_missing_object_is_one_get_that_raises_not_found(
    proxied: tuple[S3Storage, _RecordingProxy], tmp_path: Path
) -> None:
    store, proxy = proxied
    with pytest.raises(NotFound) as excinfo:
        store.download_to("inputs/nope.png", tmp_path / "dl" / "nope.png")
    assert excinfo.value.key == "inputs/nope.png"
    assert list((tmp_path / "dl").iterdir()) == []
    with pytest.raises(NotFound):
        store.get_bytes("inputs/nope.png")
    assert [r.method for r in proxy.take()] == ["GET", "GET"]


def test_s3_uploads_are_one_put_without_expect(
    proxied: tuple[S3Storage, _RecordingProxy], tmp_path: Path
) -> None:
    store, proxy = proxied
    data = bytes(range(256)) * 12288  # 3 MiB: a real output's size, well under the multipart threshold
    src = tmp_path / "video.mp4"
    src.write_bytes(data)
    store.put_file("outputs/j/i/1/video.mp4", src, "video/mp4")
    store.put_bytes("outputs/j/i/1/manifest.json", b"{}", "application/json")
    seen = proxy.take()
    assert [(r.method, urlsplit(r.path).path) for r in seen] == [
        ("PUT", _object_path(store, "outputs/j/i/1/video.mp4")),
        ("PUT", _object_path(store, "outputs/j/i/1/manifest.json")),
    ]
    assert [r.headers.get("expect") for r in seen] == [None, None]
    assert [r.headers["content-length"] for r in seen] == [str(len(data)), "2"]
    assert store.get_bytes("outputs/j/i/1/video.mp4") == data
    info = store.head("outputs/j/i/1/video.mp4")
    assert info is not None and info.content_type == "video/mp4"


def test_s3_upload_refused_once_is_sent_again_from_the_start(
    proxied: tuple[S3Storage, _RecordingProxy], tmp_path: Path
) -> None:
    store, proxy = proxied
    data = bytes(range(256)) * 4096
    src = tmp_path / "out.bin"
    src.write_bytes(data)
    proxy.fail_puts = 1
    store.put_file("outputs/j/i/1/out.bin", src, "application/octet-stream")
    seen = proxy.take()
    assert [r.method for r in seen] == ["PUT", "PUT"]
    assert [r.headers["content-length"] for r in seen] == [str(len(data))] * 2
    assert store.get_bytes("outputs/j/i/1/out.bin") == data  # the retry rewound the file


def test_s3_large_file_goes_multipart_without_expect(
    proxied: tuple[S3Storage, _RecordingProxy], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, proxy = proxied
    # A 1 MiB threshold exercises the multipart path without writing 8 MiB files.
    monkeypatch.setattr(store, "single_put_max_bytes", 1024 * 1024)
    data = bytes(range(256)) * 8192 + b"!"
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    store.put_file("outputs/j/i/1/big.bin", src, "application/octet-stream")
    seen = proxy.take()
    assert [r.method for r in seen] == ["POST", "PUT", "POST"]
    assert "uploads" in seen[0].path and "partNumber=1" in seen[1].path and "uploadId=" in seen[2].path
    assert all("expect" not in r.headers for r in seen)
    assert store.get_bytes("outputs/j/i/1/big.bin") == data


def test_s3_download_starts_over_when_the_body_is_cut(
    proxied: tuple[S3Storage, _RecordingProxy], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.exceptions import IncompleteReadError, ResponseStreamingError

    store, proxy = proxied
    data = bytes(range(256)) * 4096
    store.put_bytes("inputs/cut.bin", data, "application/octet-stream")
    proxy.take()
    proxy.cut_next_get = True
    store.download_to("inputs/cut.bin", tmp_path / "cut.bin")
    assert (tmp_path / "cut.bin").read_bytes() == data
    assert [r.method for r in proxy.take()] == ["GET", "GET"]

    monkeypatch.setattr(store, "read_attempts", 1)
    proxy.cut_next_get = True
    with pytest.raises((IncompleteReadError, ResponseStreamingError)):
        store.download_to("inputs/cut.bin", tmp_path / "again" / "cut.bin")
    assert list((tmp_path / "again").iterdir()) == []  # no partial download left behind


def test_s3_connections_are_kept_alive_and_pooled(
    recording_proxy: _RecordingProxy, s3_bucket: str, tmp_path: Path
) -> None:
    store = _s3(
        recording_proxy.url, bucket=s3_bucket, prefix=f"t-{uuid.uuid4().hex[:12]}", max_pool_connections=4
    )
    config = store._client.meta.config
    assert (config.max_pool_connections, config.tcp_keepalive) == (4, True)
    recording_proxy.take()
    src = tmp_path / "out.png"
    src.write_bytes(b"png")
    keys = [f"inputs/{i}.png" for i in range(8)]
    for key in keys:
        store.put_file(key, src, "image/png")
        store.download_to(key, tmp_path / "in.png")
        assert store.exists(key)
    sequential = recording_proxy.take()
    assert len(sequential) == 1 + 3 * len(keys)  # the bucket check on the first write, then 3 per key
    assert len({r.connection for r in sequential}) == 1

    # As many threads as pooled connections: each finds one free, none is opened beyond the pool.
    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(store.get_bytes, keys * 5)) == [b"png"] * 40
    parallel = recording_proxy.take()
    assert len(parallel) == 40
    assert len({r.connection for r in parallel}) <= 4


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_s3_forked_child_opens_its_own_connections(proxied: tuple[S3Storage, _RecordingProxy]) -> None:
    store, proxy = proxied
    store.put_bytes("inputs/a.txt", b"shared", "text/plain")
    parent_connections = {r.connection for r in proxy.take()}
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(read_fd)
            os.write(write_fd, store.get_bytes("inputs/a.txt"))
            status = 0
        finally:
            os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        from_child = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert (from_child, os.waitstatus_to_exitcode(status)) == (b"shared", 0)
    child = proxy.take()
    assert len(child) == 1 and child[0].connection not in parent_connections
    # The parent's pooled connection was left alone and still serves it.
    assert store.get_bytes("inputs/a.txt") == b"shared"
    assert {r.connection for r in proxy.take()} == parent_connections


def test_s3_storage_built_once_from_settings(
    moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        "VAR_DIR": str(tmp_path / "var"),
        "STORAGE_BACKEND": "s3",
        "S3_BUCKET": "settings-test",
        "S3_ENDPOINT_URL": moto_endpoint,
        "S3_ACCESS_KEY_ID": "testing",
        "S3_SECRET_ACCESS_KEY": "testing",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("S3_MAX_POOL_CONNECTIONS", raising=False)
    assert config_mod.load_settings().s3_max_pool_connections == 16
    monkeypatch.setenv("S3_MAX_POOL_CONNECTIONS", "24")
    monkeypatch.setattr(
        config_mod, "_settings", None
    )  # restored, with the process's own settings, afterwards
    get_storage.cache_clear()
    try:
        store = get_storage()
        assert isinstance(store, S3Storage) and get_storage() is store
        config = store._client.meta.config
        assert (config.max_pool_connections, config.tcp_keepalive) == (24, True)
    finally:
        get_storage.cache_clear()
    with pytest.raises(ValueError):
        _s3(moto_endpoint, max_pool_connections=0)


# -- helpers --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", BAD_KEYS)
def test_validate_key_rejects(bad: str) -> None:
    with pytest.raises(InvalidKey):
        validate_key(bad)


@pytest.mark.parametrize(
    "good", ["a", "inputs/ab/" + "a" * 64 + ".png", "outputs/j-1/i_2/3/manifest.json", "x=1/y.z", ".hidden/a"]
)
def test_validate_key_accepts(good: str) -> None:
    assert validate_key(good) == good
