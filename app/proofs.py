"""Per-item, per-attempt proofs: what lets a GPU host speak for the items it was given, and only those.

The control side signs (job, item, attempt) into each message it publishes. A worker hands the
proof back with every report and every storage-grant request; the control side and the web app
check it. Workers never hold the key, so a host cannot mint a proof for an item it was not sent.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from app.config import settings


def _key(secret: str) -> bytes:
    # Derived, so the key signing proofs is not the one signing sessions and URLs.
    return hmac.new(secret.encode(), b"bulkgen item proof v1", hashlib.sha256).digest()


def item_proof(job_id: str, item_id: str, attempt: int, input_key: str, secret: str | None = None) -> str:
    """The proof for (job, item, attempt, input), signed with SECRET_KEY (or `secret`).

    The input key is in it so a grant can name the input without asking the database (workers keep
    running through a Postgres outage)."""
    message = f"{job_id}\n{item_id}\n{attempt}\n{input_key}".encode()
    return hmac.new(_key(secret or settings().secret_key), message, hashlib.sha256).hexdigest()


def proof_valid(fields: Any) -> bool:
    """Whether `fields` (a report or a grant request) carries the proof of the job, item, attempt
    and input it names."""
    if not isinstance(fields, dict):
        return False
    job_id, item_id, attempt = fields.get("job_id"), fields.get("item_id"), fields.get("attempt")
    input_key, proof = fields.get("input_key"), fields.get("proof")
    if not all(isinstance(v, str) for v in (job_id, item_id, input_key, proof)):
        return False
    if not isinstance(attempt, int) or isinstance(attempt, bool):
        return False
    return hmac.compare_digest(item_proof(job_id, item_id, attempt, input_key), proof)
