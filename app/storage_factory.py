"""The deployment's storage backend, built once from settings."""

from __future__ import annotations

from functools import cache

from app.config import settings
from app.storage import LocalStorage, S3Storage, Storage


@cache
def get_storage() -> Storage:
    s = settings()
    if s.storage_backend == "s3":
        return _s3(s.s3_public_endpoint_url)
    return LocalStorage(root=s.storage_dir, base_url=s.public_url, secret=s.secret_key)


@cache
def get_worker_storage() -> Storage:
    """The storage as GPU and API hosts reach it: what their grants' presigned URLs point at.

    S3_WORKER_ENDPOINT_URL is the address hosts use (default: the public one, else the endpoint);
    local storage is served by the web app itself.
    """
    s = settings()
    if s.storage_backend != "s3" or s.s3_worker_endpoint_url in (None, s.s3_public_endpoint_url):
        return get_storage()
    return _s3(s.s3_worker_endpoint_url)


def _s3(signing_endpoint_url: str | None) -> S3Storage:
    """The deployment's bucket, signing URLs for `signing_endpoint_url` (None: the endpoint itself)."""
    s = settings()
    if not s.s3_bucket:
        raise RuntimeError("STORAGE_BACKEND=s3 needs S3_BUCKET")
    return S3Storage(
        bucket=s.s3_bucket,
        endpoint_url=s.s3_endpoint_url,
        region=s.s3_region,
        access_key=s.s3_access_key,
        secret_key=s.s3_secret_key,
        prefix=s.s3_prefix,
        public_endpoint_url=signing_endpoint_url,
        max_pool_connections=s.s3_max_pool_connections,
    )


def output_prefix(job_id: str, item_id: str, attempt: int) -> str:
    return f"outputs/{job_id}/{item_id}/{attempt}/"


def manifest_key(job_id: str, item_id: str, attempt: int) -> str:
    return output_prefix(job_id, item_id, attempt) + "manifest.json"
