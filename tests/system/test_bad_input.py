"""Bad input gets a 4xx JSON error naming the problem, and stores nothing."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import pytest
import requests

from tests.app.test_images import crafted_png, encode
from tests.conftest import System
from tests.support import Api, png_bytes


def error_of(r: requests.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()["error"]
    assert body["code"] and body["message"]
    return body


@pytest.fixture(scope="module")
def key(api_module: Api) -> str:
    return api_module.upload([png_bytes(20, 20, (1, 2, 3))])[0]


@pytest.fixture(scope="module")
def api_module(system: System) -> Api:
    return system.api


def job_count(api: Api) -> int:
    return sum(p["total"] for p in api.get("/api/v1/stats").json()["providers"].values())


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"provider": "nope", "inputs": ["K"]}, "provider", "unknown provider"),
        ({"provider": "echo", "model": "nope", "inputs": ["K"]}, "model", "unknown model"),
        ({"provider": "echo", "inputs": []}, "inputs", "empty"),
        ({"provider": "echo"}, "inputs", "required"),
        ({"provider": "echo", "inputs": "K"}, "inputs", "list"),
        ({"provider": "echo", "inputs": ["inputs/aa/does-not-exist.png"]}, "inputs[0]", "does not exist"),
        ({"provider": "echo", "inputs": ["K", "../etc/passwd"]}, "inputs[1]", "invalid key"),
        ({"provider": "echo", "inputs": ["/etc/passwd"]}, "inputs[0]", "invalid key"),
        # Per-image entries: each is checked as a whole job would be, and the error names it.
        (
            {"provider": "echo", "inputs": ["K", {"key": "K", "params": {"delay_s": -1}}]},
            "inputs[1].params.delay_s",
            "at least",
        ),
        ({"provider": "echo", "inputs": [{"key": "K", "bogus": 1}]}, "inputs[0].bogus", "unknown field"),
        ({"provider": "echo", "inputs": [{"prompt": "a cat"}]}, "inputs[0].key", "required"),
        ({"provider": "echo", "inputs": [{"key": "K", "prompt": 5}]}, "inputs[0].prompt", "string"),
        ({"provider": "echo", "inputs": [{"key": "K", "seed": 5}]}, "inputs[0].seed", "unknown parameter"),
        ({"provider": "echo", "inputs": [7]}, "inputs[0]", "storage key"),
        ({"provider": "echo", "inputs_prefix": "nothing-here/"}, "inputs_prefix", "no images"),
        ({"provider": "echo", "inputs_prefix": "../"}, "inputs_prefix", "invalid"),
        ({"provider": "echo", "inputs": ["K"], "inputs_prefix": "x/"}, "inputs_prefix", "not both"),
        (
            {"provider": "echo", "inputs": ["K"], "prompts_file": "no/such.csv"},
            "prompts_file",
            "does not exist",
        ),
        ({"provider": "echo", "inputs": ["K"], "params": {"delay_s": -1}}, "params.delay_s", "at least"),
        ({"provider": "echo", "inputs": ["K"], "params": {"bogus": 1}}, "params.bogus", "unknown parameter"),
        ({"provider": "echo", "inputs": ["K"], "priority": "urgent"}, "priority", "priority"),
        ({"provider": "echo", "inputs": ["K"], "priority": {"a": 1}}, "priority", "priority"),
        ({"provider": {"echo": 1}, "inputs": ["K"]}, "provider", "must be a string"),
    ],
)
def test_bad_job_submissions(api_module: Api, key: str, body: dict, field: str, words: str) -> None:
    def put_key(v: Any) -> Any:
        if isinstance(v, list):
            return [put_key(x) for x in v]
        if isinstance(v, dict):
            return {k: put_key(x) for k, x in v.items()}
        return key if v == "K" else v

    body = {k: put_key(v) for k, v in body.items()}
    before = job_count(api_module)
    err = error_of(api_module.post("/api/v1/jobs", json=body), 400)
    assert err["field"] == field
    assert words in err["message"]
    assert job_count(api_module) == before


@pytest.mark.parametrize(
    ("raw", "code", "words"),
    [
        ('{"provider": "echo", "inputs": ["K"], "idempotency_key": "a\\u0000b"}', "bad_request", "NUL"),
        ('{"provider": "echo", "inputs": ["K"], "params": {"a\\u0000": 1}}', "bad_request", "NUL"),
        ('{"provider": "echo", "inputs": ["K"], "prompt": "x\\ud800y"}', "invalid_json", "JSON"),
    ],
)
def test_text_the_database_cannot_store(api_module: Api, key: str, raw: str, code: str, words: str) -> None:
    before = job_count(api_module)
    r = api_module.post(
        "/api/v1/jobs", data=raw.replace("K", key), headers={"Content-Type": "application/json"}
    )
    err = error_of(r, 400)
    assert err["code"] == code and words in err["message"], err
    assert job_count(api_module) == before
    err = error_of(api_module.get("/api/v1/jobs", params={"status": "queued\x00"}), 400)
    assert "the query" in err["message"]


def test_malformed_json(api_module: Api) -> None:
    r = api_module.post("/api/v1/jobs", data=b"{not json", headers={"Content-Type": "application/json"})
    assert error_of(r, 400)["code"] == "invalid_json"
    r = api_module.post("/api/v1/jobs", json=[1, 2])
    assert error_of(r, 400)["code"] == "invalid_json"


def test_unknown_ids_are_404(api_module: Api) -> None:
    for path in ("/api/v1/jobs/nope", "/api/v1/jobs/nope/download", "/api/v1/items/nope"):
        assert error_of(api_module.get(path), 404)["code"] == "not_found"
    for path in ("/api/v1/jobs/nope/cancel", "/api/v1/jobs/nope/retry", "/api/v1/items/nope/retry"):
        assert error_of(api_module.post(path), 404)["code"] == "not_found"


def test_non_image_upload_is_rejected_and_not_stored(system: System, api_module: Api) -> None:
    before = [o.key for o in system.store().list(prefix="inputs/", limit=1000)[0]]
    r = api_module.post(
        "/api/v1/uploads", files=[("files", ("notes.png", b"hello, not an image", "image/png"))]
    )
    err = error_of(r, 400)
    assert err["field"] == "files" and "notes.png" in err["message"]
    # A batch with one bad file stores none of them.
    r = api_module.post(
        "/api/v1/uploads",
        files=[
            ("files", ("ok.png", png_bytes(9, 9, (9, 9, 9)), "image/png")),
            ("files", ("bad.jpg", b"", "image/jpeg")),
        ],
    )
    error_of(r, 400)
    after = [o.key for o in system.store().list(prefix="inputs/", limit=1000)[0]]
    assert after == before


def _truncated_png() -> bytes:
    data = encode("PNG", (128, 128), noise=True)
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("name", "make", "words"),
    [
        ("cut.png", _truncated_png, "damaged or truncated"),
        ("bomb.png", lambda: crafted_png(8000, 8000, zlib.compress(b"\x00" * 8_008_000, 9)), "megapixels"),
        ("page.jpg", lambda: b"<html><body>not a photo</body></html>", "not an image"),
        ("empty.webp", lambda: b"", "empty"),
    ],
)
def test_bad_images_over_http_are_refused_and_not_stored(
    system: System, api_module: Api, name: str, make: Callable[[], bytes], words: str
) -> None:
    before = [o.key for o in system.store().list(prefix="inputs/", limit=1000)[0]]
    err = error_of(api_module.post("/api/v1/uploads", files=[("files", (name, make(), "image/png"))]), 400)
    assert err["field"] == "files" and name in err["message"] and words in err["message"], err
    assert [o.key for o in system.store().list(prefix="inputs/", limit=1000)[0]] == before


def test_upload_over_size_limit(system: System, api_module: Api) -> None:
    limit = 20 * 1024 * 1024
    r = api_module.post(
        "/api/v1/uploads", files=[("files", ("big.png", b"\x89PNG" + b"0" * (limit + 10), "image/png"))]
    )
    assert r.status_code == 413
    assert r.json()["error"]["code"] in ("too_large", "request_entity_too_large")


def test_upload_without_files(api_module: Api) -> None:
    assert error_of(api_module.post("/api/v1/uploads"), 400)["field"] == "files"


def test_missing_or_wrong_token(system: System) -> None:
    base = system.base_url
    assert error_of(requests.get(f"{base}/api/v1/jobs", timeout=10), 401)["code"] == "unauthorized"
    r = requests.get(f"{base}/api/v1/jobs", headers={"Authorization": "Bearer bg_wrong"}, timeout=10)
    assert error_of(r, 401)["code"] == "unauthorized"
    r = requests.get(f"{base}/api/v1/jobs", headers={"Authorization": "Basic abc"}, timeout=10)
    assert error_of(r, 401)["code"] == "unauthorized"
    r = requests.post(
        f"{base}/api/v1/uploads", files=[("files", ("a.png", png_bytes(), "image/png"))], timeout=10
    )
    assert error_of(r, 401)["code"] == "unauthorized"


def test_asset_prefix_with_dotdot_is_rejected(api_module: Api, key: str) -> None:
    err = error_of(api_module.get("/api/v1/assets", params={"prefix": "../"}), 400)
    assert err["field"] == "prefix"
    listing = api_module.get("/api/v1/assets", params={"prefix": "inputs/"}).json()
    assert key in [a["key"] for a in listing["assets"]]
