"""Short-lived coordination state in Redis: leases, cancel flags, attempt markers.

Everything here is a cache of work. If Redis loses it, the reconciler rebuilds
what matters from Postgres and storage; fenced updates on the control side keep
a lost lease or flag from recording an item twice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cache

import redis

PREFIX = "bulkgen"
EPOCH_KEY = f"{PREFIX}:epoch"
# Hash "node/pid" -> {"device", "queues", ...}: which GPU serves which queue.
DEVICES_KEY = f"{PREFIX}:devices"
CANCEL_TTL_S = 7 * 24 * 3600
MEMO_TTL_S = 3 * 24 * 3600

# Renew only while we still hold it; re-take it if it vanished (Redis restarted) and nobody else has it.
_RENEW = """
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2]); return 1
elseif not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]); return 2
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def lease_key(item_id: str) -> str:
    return f"{PREFIX}:lease:{item_id}"


def cancel_key(item_id: str) -> str:
    return f"{PREFIX}:cancel:{item_id}"


def attempt_key(item_id: str) -> str:
    return f"{PREFIX}:attempt:{item_id}"


def memo_key(item_id: str, attempt: int, name: str) -> str:
    return f"{PREFIX}:memo:{item_id}:{attempt}:{name}"


@cache
def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=10)


@dataclass(frozen=True)
class Lease:
    item_id: str
    attempt: int
    token: str

    @property
    def value(self) -> str:
        return f"{self.attempt}|{self.token}"


class Coordination:
    def __init__(self, client: redis.Redis) -> None:
        self.r = client
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    # Leases: one holder per item; the value carries the attempt so a stale delivery can tell.
    def acquire(self, item_id: str, attempt: int, holder: str, ttl_s: float) -> Lease | None:
        lease = Lease(item_id, attempt, f"{holder}|{time.time():.3f}")
        ok = self.r.set(lease_key(item_id), lease.value, nx=True, px=int(ttl_s * 1000))
        return lease if ok else None

    def renew(self, lease: Lease, ttl_s: float) -> bool:
        return bool(self._renew(keys=[lease_key(lease.item_id)], args=[lease.value, int(ttl_s * 1000)]))

    def release(self, lease: Lease) -> None:
        self._release(keys=[lease_key(lease.item_id)], args=[lease.value])

    def leases_present(self, item_ids: list[str]) -> dict[str, bool]:
        if not item_ids:
            return {}
        values = self.r.mget([lease_key(i) for i in item_ids])
        return {i: v is not None for i, v in zip(item_ids, values, strict=True)}

    # Cancel flags, checked by workers before and during a run.
    def cancel(self, item_ids: list[str]) -> None:
        if not item_ids:
            return
        pipe = self.r.pipeline(transaction=False)
        for item_id in item_ids:
            pipe.set(cancel_key(item_id), "1", ex=CANCEL_TTL_S)
        pipe.execute()

    def is_cancelled(self, item_id: str) -> bool:
        return bool(self.r.exists(cancel_key(item_id)))

    # The attempt each item is on, so a stale message from an older attempt is dropped early.
    def set_attempts(self, attempts: dict[str, int]) -> None:
        if not attempts:
            return
        pipe = self.r.pipeline(transaction=False)
        for item_id, attempt in attempts.items():
            pipe.set(attempt_key(item_id), attempt, ex=CANCEL_TTL_S)
        pipe.execute()

    def current_attempt(self, item_id: str) -> int | None:
        value = self.r.get(attempt_key(item_id))
        return int(value) if value is not None else None

    # Small per-attempt memory for providers (e.g. the Runway task id).
    def remember(self, item_id: str, attempt: int, name: str, value: str) -> None:
        self.r.set(memo_key(item_id, attempt, name), value, ex=MEMO_TTL_S)

    def recall(self, item_id: str, attempt: int, name: str) -> str | None:
        value = self.r.get(memo_key(item_id, attempt, name))
        return value.decode() if value is not None else None

    # Broker data-loss detection: the control side keeps this key; if it vanishes, Redis lost data.
    def epoch(self) -> str | None:
        value = self.r.get(EPOCH_KEY)
        return value.decode() if value is not None else None

    def set_epoch(self, value: str) -> bool:
        return bool(self.r.set(EPOCH_KEY, value, nx=True))
