"""Worker tokens: what a GPU or API host shows to get per-item storage grants, and nothing else.

Random, shown once, stored as sha256 hashes (like API tokens, but not tied to a user: a token
names a host or a fleet, and revoking it stops those hosts at their next request).

Postgres is the record. Active tokens are mirrored in the Redis hash `bulkgen:worker-tokens`, so a
grant needs no database (hosts keep running through a Postgres outage, as they always have): a
token missing there (Redis lost its data) is looked up in Postgres and mirrored again; revoking
removes it from both at once.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time

import redis
from sqlalchemy import select, update

from app.broker import coordination
from app.db import db
from app.models import WorkerToken, utcnow
from app.services.users import hash_token

log = logging.getLogger(__name__)
WORKER_TOKEN_PREFIX = "bgw_"
MIRROR_KEY = "bulkgen:worker-tokens"
# last_used_at is written at most this often per token and process: every item asks for grants.
TOUCH_EVERY_S = 60.0
_touched: dict[str, float] = {}
_touched_lock = threading.Lock()


def create_worker_token(name: str, created_by: int | None = None) -> str:
    name = name.strip()
    if not 0 < len(name) <= 100:
        raise ValueError("a worker token needs a name of 1 to 100 characters (e.g. the host's name)")
    token = WORKER_TOKEN_PREFIX + secrets.token_urlsafe(32)
    digest = hash_token(token)
    db.session.add(WorkerToken(name=name, token_hash=digest, prefix=token[:10], created_by=created_by))
    db.session.commit()
    _mirror(digest, name)
    return token


def worker_for_token(token: str) -> str | None:
    """The name of the active worker token `token`, else None."""
    digest = hash_token(token)
    try:
        name = coordination().r.hget(MIRROR_KEY, digest)
    except redis.RedisError as exc:
        log.warning("worker tokens: Redis unreachable, asking Postgres: %s", exc)
        name = None
    if name is not None:
        _touch(digest)
        return name.decode()
    row = db.session.scalar(select(WorkerToken).where(WorkerToken.token_hash == digest))
    if row is None or row.revoked_at is not None:
        return None
    _mirror(digest, row.name)
    _touch(digest)
    return row.name


def _mirror(digest: str, name: str) -> None:
    try:
        coordination().r.hset(MIRROR_KEY, digest, name)
    except redis.RedisError as exc:  # looked up in Postgres until it is mirrored again
        log.warning("worker tokens: could not mirror a token in Redis: %s", exc)


def _touch(digest: str) -> None:
    """Record when the token was last used, at most once a minute; never fails a grant."""
    now = time.monotonic()
    with _touched_lock:
        if now - _touched.get(digest, -TOUCH_EVERY_S) < TOUCH_EVERY_S:
            return
        _touched[digest] = now
    try:
        db.session.execute(
            update(WorkerToken).where(WorkerToken.token_hash == digest).values(last_used_at=utcnow())
        )
        db.session.commit()
    except Exception as exc:  # noqa: BLE001 - a database outage must not stop the hosts
        db.session.rollback()
        log.debug("worker tokens: could not record the last use: %s", exc)


def worker_tokens() -> list[WorkerToken]:
    return list(db.session.scalars(select(WorkerToken).order_by(WorkerToken.id)))


def revoke_worker_token(token_id: int) -> bool:
    row = db.session.get(WorkerToken, token_id)
    if row is None or row.revoked_at is not None:
        return False
    # Out of the mirror first: with Redis away this raises and nothing changed (a revocation that
    # Postgres recorded but the mirror missed would let the token in again once Redis is back).
    # Again after the commit, in case a grant re-mirrored it from the row it read just before.
    mirror = coordination().r
    mirror.hdel(MIRROR_KEY, row.token_hash)
    row.revoked_at = utcnow()
    db.session.commit()
    mirror.hdel(MIRROR_KEY, row.token_hash)
    return True
