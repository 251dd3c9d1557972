"""The same pipeline with S3-compatible storage (moto's S3 server on loopback) instead of a directory."""

from __future__ import annotations

import io
import zipfile

import requests

from app.storage import S3Storage
from tests.conftest import SystemFactory
from tests.support import distinct_pngs


def test_job_outputs_land_in_s3_and_download_through_presigned_urls(
    systems: SystemFactory, moto_endpoint: str
) -> None:
    env = {
        "STORAGE_BACKEND": "s3",
        "S3_BUCKET": "bulkgen-e2e",
        "S3_ENDPOINT_URL": moto_endpoint,
        "S3_REGION": "us-east-1",
        "S3_ACCESS_KEY_ID": "test",
        "S3_SECRET_ACCESS_KEY": "test",
        "S3_PREFIX": "tenant-a",
    }
    sysm = systems.start("s3", workers=("control", "wan_local"), env=env)
    images = distinct_pngs(4, seed=40)
    keys = sysm.api.upload(images)
    job = sysm.api.wait(sysm.api.submit(keys, params={"queue": "wan_local"})["id"], timeout=120)
    assert job["status"] == "succeeded"

    store = S3Storage("bulkgen-e2e", moto_endpoint, "us-east-1", "test", "test", prefix="tenant-a")
    by_key = dict(zip(keys, images, strict=True))
    for item in job["items"]:
        out = item["outputs"][0]
        assert out["url"].startswith(moto_endpoint)
        assert requests.get(out["url"], timeout=30).content == by_key[item["input_key"]]
        listed, _ = store.list(prefix=f"outputs/{job['id']}/{item['id']}/")
        assert sorted(o.key.rsplit("/", 1)[-1] for o in listed) == ["echo.png", "manifest.json"]
    r = sysm.api.get(f"/api/v1/jobs/{job['id']}/download")
    archive = zipfile.ZipFile(io.BytesIO(r.content))
    assert sorted(archive.read(n) for n in archive.namelist() if n != "manifest.csv") == sorted(images)
    assets = sysm.api.get("/api/v1/assets", params={"prefix": "inputs/"}).json()["assets"]
    assert set(keys) <= {a["key"] for a in assets}
