"""Storage grants: the only way a worker touches storage.

A GPU or API host holds no storage keys. For each item attempt it asks the web app, with its worker
token and the item's proof (app/proofs.py), for presigned URLs:

- a read grant (input GET, manifest GET) for the delivery the system currently stands behind: the
  proof must cover the item, attempt and input key, and the message's dispatch token must be the
  item's current one (an item taken back out of the window, or
  published again since, gets nothing). It is asked for before the lease because GPU workers fetch
  the next input while the device runs the item before (the prefetch that keeps GPUs busy);
- a write grant (PUTs under the attempt's own prefix, manifest included) only while the worker
  holds the item's lease.

URLs live `GRANT_TTL_S` (minutes). With local storage they are the web app's own signed /files
routes, so embedded mode and the tests run the same contract as S3.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import ValidationError

from app.broker import coordination
from app.config import settings
from app.contract.wire import (
    ItemIdentity,
    ReadGrant,
    ReadGrantRequest,
    SignedPut,
    SignedUrl,
    WriteGrant,
    WriteGrantRequest,
)
from app.proofs import proof_valid
from app.storage import InvalidKey, validate_key
from app.storage_factory import get_worker_storage, manifest_key, output_prefix

MAX_OUTPUTS = 64
R = TypeVar("R", bound=ItemIdentity)


class GrantRefused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _checked(body: dict[str, Any], model: type[R]) -> R:
    """The request, if its proof holds; Postgres is not asked, so hosts keep running through a
    database outage (the proof covers the input key)."""
    # The proof first: a host that cannot speak for the item learns nothing about the body's shape.
    if not proof_valid(body):
        raise GrantRefused(403, "bad_proof", "the proof does not match this item, attempt and input")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise GrantRefused(400, "bad_request", f"{where}: {first['msg']}") from exc


def read_grant(body: dict[str, Any]) -> dict[str, Any]:
    asked = _checked(body, ReadGrantRequest)
    job_id, item_id, attempt, input_key = asked.job_id, asked.item_id, asked.attempt, str(asked.input_key)
    cancelled, current, token, _ = coordination().grant_state(item_id)
    if cancelled:
        raise GrantRefused(409, "cancelled", "the item was cancelled")
    if current is not None and current != attempt:
        raise GrantRefused(409, "not_current", f"the item is on attempt {current}")
    if token is not None and asked.dispatch != token:
        why = "taken back out of the window" if token == "recalled" else "published again since"
        raise GrantRefused(409, "recalled", f"this delivery is no longer current: {why}")
    store, ttl = get_worker_storage(), settings().grant_ttl_s
    manifest = manifest_key(job_id, item_id, attempt)
    return ReadGrant(
        input=SignedUrl(key=input_key, url=store.signed_url(input_key, expires_s=ttl)),
        manifest=SignedUrl(key=manifest, url=store.signed_url(manifest, expires_s=ttl)),
        expires_s=ttl,
    ).wire()


def write_grant(body: dict[str, Any]) -> dict[str, Any]:
    asked = _checked(body, WriteGrantRequest)
    if not 0 < len(asked.outputs) <= MAX_OUTPUTS:
        raise GrantRefused(400, "bad_request", f"outputs must list 1 to {MAX_OUTPUTS} objects")
    job_id, item_id, attempt = asked.job_id, asked.item_id, asked.attempt
    cancelled, _, _, lease = coordination().grant_state(item_id)
    if cancelled:
        raise GrantRefused(409, "cancelled", "the item was cancelled")
    if lease != f"{attempt}|{asked.lease}":
        raise GrantRefused(409, "lease_not_held", "this worker does not hold the item's lease")
    prefix = output_prefix(job_id, item_id, attempt)
    store, ttl = get_worker_storage(), settings().grant_ttl_s
    puts = []
    for out in asked.outputs:
        try:
            if not out.key.startswith(prefix):
                raise InvalidKey(f"{out.key!r} is outside the attempt's prefix {prefix}")
            validate_key(out.key)
            url = store.signed_url(out.key, expires_s=ttl, method="PUT", content_type=out.content_type)
        except (InvalidKey, ValueError) as exc:
            raise GrantRefused(400, "bad_output", str(exc)) from exc
        puts.append(SignedPut(key=out.key, url=url, content_type=out.content_type))
    return WriteGrant(puts=puts, expires_s=ttl).wire()
