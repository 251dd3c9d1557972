"""`bulkgen check`: a smoke check against a running system (upload, one echo item, download)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import requests


def check(args: argparse.Namespace) -> int:
    """Smoke check against a running stack: upload, run an echo job, download."""
    base = args.url.rstrip("/")
    token = args.token or (Path(args.var) / "admin-credentials").read_text().split("\n")[2]
    headers = {"Authorization": f"Bearer {token}"}
    png = _tiny_png()
    r = requests.post(
        f"{base}/api/v1/uploads", headers=headers, files={"files": ("dot.png", png, "image/png")}, timeout=30
    )
    r.raise_for_status()
    key = r.json()["assets"][0]["key"]
    r = requests.post(
        f"{base}/api/v1/jobs", headers=headers, json={"provider": "echo", "inputs": [key]}, timeout=30
    )
    r.raise_for_status()
    job_id = r.json()["id"]
    for _ in range(600):
        job = requests.get(f"{base}/api/v1/jobs/{job_id}", headers=headers, timeout=30).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.1)
    print(f"job {job_id}: {job['status']}")
    return 0 if job["status"] == "succeeded" else 1


def _tiny_png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 60, 30)).save(buf, format="PNG")
    return buf.getvalue()
