"""Helpers for system tests: an API client and small image factories."""

from __future__ import annotations

import io
import time
from typing import Any

import requests
from PIL import Image

FINAL = ("succeeded", "failed", "cancelled")


def png_bytes(width: int = 32, height: int = 24, color: tuple[int, int, int] = (10, 120, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format="PNG")
    return buf.getvalue()


def distinct_pngs(n: int, seed: int = 0) -> list[bytes]:
    """n different images (uploads are content-addressed, so identical bytes share one key)."""
    return [
        png_bytes(16 + (i % 7), 16 + (i // 7) % 9, ((seed * 31 + i) % 256, (i * 7) % 256, (i * 13) % 256))
        for i in range(n)
    ]


class Api:
    def __init__(self, base_url: str, token: str) -> None:
        self.base = base_url.rstrip("/")
        self.s = requests.Session()
        self.s.headers["Authorization"] = f"Bearer {token}"

    def url(self, path: str) -> str:
        return self.base + path

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.s.get(self.url(path), timeout=60, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return self.s.post(self.url(path), timeout=60, **kw)

    def upload(self, images: list[bytes], names: list[str] | None = None) -> list[str]:
        keys: list[str] = []
        for start in range(0, len(images), 50):
            chunk = images[start : start + 50]
            files = [
                ("files", ((names[start + i] if names else f"img{start + i}.png"), data, "image/png"))
                for i, data in enumerate(chunk)
            ]
            r = self.post("/api/v1/uploads", files=files)
            assert r.status_code == 201, r.text
            keys += [a["key"] for a in r.json()["assets"]]
        return keys

    def submit(self, inputs: list[str], provider: str = "echo", **fields: Any) -> dict[str, Any]:
        r = self.post("/api/v1/jobs", json={"provider": provider, "inputs": inputs, **fields})
        assert r.status_code in (200, 201), r.text
        return r.json()

    def job(self, job_id: str) -> dict[str, Any]:
        r = self.get(f"/api/v1/jobs/{job_id}", params={"items_limit": 10000})
        assert r.status_code == 200, r.text
        return r.json()

    def events(self, job_id: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        after = 0
        while True:
            page = self.get(f"/api/v1/jobs/{job_id}/events", params={"after": after, "limit": 1000}).json()[
                "events"
            ]
            if not page:
                return out
            out += page
            after = page[-1]["id"]

    def wait(self, job_id: str, timeout: float = 120.0, statuses: tuple[str, ...] = FINAL) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        job: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                job = self.job(job_id)
            except (requests.RequestException, AssertionError):
                time.sleep(0.5)
                continue
            if job["status"] in statuses:
                return job
            time.sleep(0.25)
        raise AssertionError(
            f"job {job_id} still {job.get('status')} after {timeout} s: counts {job.get('counts')}"
        )

    def wait_item(self, job_id: str, predicate: Any, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for item in self.job(job_id)["items"]:
                if predicate(item):
                    return item
            time.sleep(0.1)
        raise AssertionError(f"no item of job {job_id} matched in {timeout} s")
