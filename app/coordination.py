"""Short-lived coordination state in Redis: leases, cancel flags, attempt markers.

Everything here is a cache of work. If Redis loses it, the reconciler rebuilds
what matters from Postgres and storage; fenced updates on the control side keep
a lost lease or flag from recording an item twice.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import cache
from typing import Any

import redis

PREFIX = "bulkgen"
EPOCH_KEY = f"{PREFIX}:epoch"
# When the reconciler last talked to Redis, and until when it gives workers time to re-take leases.
SEEN_KEY = f"{PREFIX}:reconciler-seen"
GRACE_KEY = f"{PREFIX}:lease-grace-until"
# Sorted set "item_id|attempt" -> expiry time: items a worker prefetched but has not started. A
# worker renews its entries; the reconciler re-publishes those that expired (their worker died).
HELD_KEY = f"{PREFIX}:held"
# Hash "node/pid" -> {"device", "queues", ...}: which GPU serves which queue.
DEVICES_KEY = f"{PREFIX}:devices"
# Hash "node/pid" -> {"queues", "slots", "at"}: the item slots (running batch + prefetch) each worker
# process offers; the scheduler sizes each queue's window from them.
CONSUMERS_KEY = f"{PREFIX}:consumers"
# State reports from workers to the control side: a stream read by one applier at a time.
REPORTS_KEY = f"{PREFIX}:reports"
REPORTS_GROUP = "control"
# One consumer name per applier partition (APPLIER_PARTITIONS): the next holder of a partition
# re-reads what a dead one read but never acked.
REPORTS_CONSUMER = "applier"
CANCEL_TTL_S = 7 * 24 * 3600
SERVED_MAX = 10_000
MEMO_TTL_S = 3 * 24 * 3600

# Renew only while we still hold it; re-take it if it vanished (Redis restarted) and nobody else has
# it -- unless (KEYS[2], the item's attempt marker) a newer attempt has been published meanwhile.
_RENEW = """
if #KEYS > 1 then
  local current = redis.call('GET', KEYS[2])
  if current and tonumber(current) > tonumber(ARGV[3]) then return 0 end
end
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2]); return 1
elseif not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]); return 2
end
return 0
"""
# Start an item in one round trip: refuse if it was cancelled, a newer attempt was published or this
# attempt already has its outcome; take the lease if it is free or held by an older attempt (the
# control side publishes a newer attempt only after giving up on the older one, whose renewal then
# finds it lost); append the `running` report; drop the item's hold (the lease takes over). A message
# whose dispatch token is no longer the item's (the scheduler took it back out of the window, or
# published it again) is refused: 'recalled'.
_START = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 'cancelled' end
if ARGV[6] ~= '' then
  local token = redis.call('GET', KEYS[7])
  if token and token ~= ARGV[6] then return 'recalled' end
end
local current = redis.call('GET', KEYS[2])
if current and tonumber(current) > tonumber(ARGV[3]) then return 'superseded' end
if redis.call('EXISTS', KEYS[3]) == 1 then return 'superseded' end
local v = redis.call('GET', KEYS[4])
if v then
  local held = tonumber(string.match(v, '^(%d+)|'))
  if not held or held >= tonumber(ARGV[3]) then return 'held' end
end
redis.call('SET', KEYS[4], ARGV[1], 'PX', ARGV[2])
redis.call('XADD', KEYS[5], '*', 'r', ARGV[4])
redis.call('ZREM', KEYS[6], ARGV[5])
return 'started'
"""
# Take published items back out of the window, each only if it has not started: an item whose lease
# this attempt holds has started (its `running` report is on its way) and stays.
_TAKE_BACK = """
local out = {}
for i, key in ipairs(KEYS) do
  local lease = redis.call('GET', 'bulkgen:lease:' .. ARGV[2 * i - 1])
  local held = lease and tonumber(string.match(lease, '^(%d+)|'))
  if held and held >= tonumber(ARGV[2 * i]) then
    out[i] = 0
  else
    redis.call('SET', key, 'recalled', 'EX', 604800)
    out[i] = 1
  end
end
return out
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


def dispatch_key(item_id: str) -> str:
    """The token of the item's latest publish: only that message may start it."""
    return f"{PREFIX}:dispatch:{item_id}"


def lock_key(name: str) -> str:
    return f"{PREFIX}:lock:{name}"


def outcome_key(item_id: str, attempt: int) -> str:
    return f"{PREFIX}:outcome:{item_id}:{attempt}"


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
        self._start = client.register_script(_START)
        self._take_back = client.register_script(_TAKE_BACK)

    # Leases: one holder per item; the value carries the attempt so a stale delivery can tell.
    def start(
        self,
        item_id: str,
        attempt: int,
        holder: str,
        ttl_s: float,
        running: dict[str, Any],
        token: str = "",
    ) -> tuple[str, Lease | None]:
        """Take an item's lease and report it running, if it may start: ("started", lease), or
        ("cancelled" | "recalled" | "superseded" | "held", None)."""
        lease = Lease(item_id, attempt, f"{holder}|{time.time():.3f}")
        keys = [
            cancel_key(item_id),
            attempt_key(item_id),
            outcome_key(item_id, attempt),
            lease_key(item_id),
            REPORTS_KEY,
            HELD_KEY,
            dispatch_key(item_id),
        ]
        body = json.dumps(running, separators=(",", ":"))
        args = [lease.value, int(ttl_s * 1000), attempt, body, f"{item_id}|{attempt}", token]
        answer = self._start(keys=keys, args=args)
        answer = answer.decode() if isinstance(answer, bytes) else str(answer)
        return answer, (lease if answer == "started" else None)

    def renew_many(self, leases: list[tuple[Lease, float]]) -> list[bool]:
        """Renew several leases in one round trip; False for each that was lost."""
        pipe = self.r.pipeline(transaction=False)
        for lease, ttl_s in leases:
            keys = [lease_key(lease.item_id), attempt_key(lease.item_id)]
            self._renew(keys=keys, args=[lease.value, int(ttl_s * 1000), lease.attempt], client=pipe)
        return [bool(v) for v in pipe.execute()]

    def release(self, lease: Lease) -> None:
        self._release(keys=[lease_key(lease.item_id)], args=[lease.value])

    # Named locks (e.g. the single report applier), with the same renew/release fencing as leases.
    def try_lock(self, name: str, holder: str, ttl_s: float) -> Lease | None:
        lock = Lease(name, 0, f"{holder}|{time.time():.3f}")
        ok = self.r.set(lock_key(name), lock.value, nx=True, px=int(ttl_s * 1000))
        return lock if ok else None

    def renew_lock(self, lock: Lease, ttl_s: float) -> bool:
        return bool(self._renew(keys=[lock_key(lock.item_id)], args=[lock.value, int(ttl_s * 1000), 0]))

    def release_lock(self, lock: Lease) -> None:
        self._release(keys=[lock_key(lock.item_id)], args=[lock.value])

    def leases_present(self, item_ids: list[str]) -> dict[str, bool]:
        if not item_ids:
            return {}
        values = self.r.mget([lease_key(i) for i in item_ids])
        return {i: v is not None for i, v in zip(item_ids, values, strict=True)}

    # Prefetched items: held without a lease (no attempt is spent) until they start or go back.
    def hold(self, entries: list[tuple[str, int]], ttl_s: float) -> None:
        if entries:
            until = time.time() + ttl_s
            self.r.zadd(HELD_KEY, {f"{item_id}|{attempt}": until for item_id, attempt in entries})

    def held(self, entries: list[tuple[str, int]]) -> set[str]:
        """Which of these (item, attempt) a worker holds prefetched now."""
        pipe = self.r.pipeline(transaction=False)
        for item_id, attempt in entries:
            pipe.zscore(HELD_KEY, f"{item_id}|{attempt}")
        now = time.time()
        return {
            item_id
            for (item_id, _), until in zip(entries, pipe.execute(), strict=True)
            if until and until > now
        }

    def unhold(self, item_id: str, attempt: int) -> None:
        self.r.zrem(HELD_KEY, f"{item_id}|{attempt}")

    def take_expired_holds(self, now: float, limit: int) -> list[tuple[str, int]]:
        """Holds whose worker stopped renewing them, removed as they are taken."""
        members = self.r.zrangebyscore(HELD_KEY, "-inf", now, start=0, num=limit)
        if not members:
            return []
        self.r.zrem(HELD_KEY, *members)
        taken = []
        for member in members:
            item_id, _, attempt = member.decode().rpartition("|")
            taken.append((item_id, int(attempt)))
        return taken

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

    def delivery_state(self, item_id: str, attempt: int) -> tuple[bool, int | None, bool, str | None]:
        """(cancelled, current attempt, whether this attempt already reported its outcome, the
        item's current dispatch token) in one round trip: what a worker checks before any work."""
        cancelled, current, outcome, token = self.r.mget(
            [cancel_key(item_id), attempt_key(item_id), outcome_key(item_id, attempt), dispatch_key(item_id)]
        )
        return (
            cancelled is not None,
            int(current) if current is not None else None,
            outcome is not None,
            token.decode() if token is not None else None,
        )

    def grant_state(self, item_id: str) -> tuple[bool, int | None, str | None, str | None]:
        """(cancelled, current attempt, current dispatch token, lease value) in one round trip: what
        the web app checks before it grants a worker storage access for an item."""
        cancelled, current, token, lease = self.r.mget(
            [cancel_key(item_id), attempt_key(item_id), dispatch_key(item_id), lease_key(item_id)]
        )
        return (
            cancelled is not None,
            int(current) if current is not None else None,
            token.decode() if token is not None else None,
            lease.decode() if lease is not None else None,
        )

    # The attempt each item is on, so a stale message from an older attempt is dropped early; and
    # the token of its latest publish, so an earlier message of the same attempt is refused.
    def set_attempts(self, attempts: dict[str, int], tokens: dict[str, str] | None = None) -> None:
        if not attempts:
            return
        pipe = self.r.pipeline(transaction=False)
        for item_id, attempt in attempts.items():
            pipe.set(attempt_key(item_id), attempt, ex=CANCEL_TTL_S)
            if tokens and item_id in tokens:
                pipe.set(dispatch_key(item_id), tokens[item_id], ex=CANCEL_TTL_S)
        pipe.execute()

    def take_back(self, entries: list[tuple[str, int]]) -> list[str]:
        """Take (item, attempt) back out of the window where it has not started; returns the ids
        taken back (their messages are refused when a worker gets to them)."""
        if not entries:
            return []
        keys = [dispatch_key(item_id) for item_id, _ in entries]
        args = [v for item_id, attempt in entries for v in (item_id, attempt)]
        answers = self._take_back(keys=keys, args=args)
        return [item_id for (item_id, _), ok in zip(entries, answers, strict=True) if int(ok)]

    def recalled(self, item_ids: list[str]) -> set[str]:
        """Which of these items were taken back out of the window."""
        if not item_ids:
            return set()
        values = self.r.mget([dispatch_key(i) for i in item_ids])
        return {i for i, v in zip(item_ids, values, strict=True) if v == b"recalled"}

    # When each user and job last had an item published on a queue: the scheduler's tie-break.
    def served(self, queue: str) -> dict[str, float]:
        return {k.decode(): float(v) for k, v in self.r.hgetall(f"{PREFIX}:served:{queue}").items()}

    def mark_served(self, queue: str, served: dict[str, float]) -> None:
        if not served:
            return
        key = f"{PREFIX}:served:{queue}"
        pipe = self.r.pipeline(transaction=False)
        pipe.hset(key, mapping=served)
        pipe.hlen(key)
        pipe.expire(key, 24 * 3600)
        _, size, _ = pipe.execute()
        if size > SERVED_MAX:
            # Mostly finished jobs by now: forgetting them only loses a tie-break.
            self.r.delete(key)

    # What each worker process offers: the scheduler's window per queue follows it.
    def announce_consumer(self, name: str, queues: list[str], slots: int, **about: Any) -> None:
        """`about`: what the Workers page shows of the process (state, kind, running items, models)."""
        entry = {**about, "queues": sorted(queues), "slots": slots, "at": time.time()}
        self.r.hset(CONSUMERS_KEY, name, json.dumps(entry))

    def forget_worker(self, name: str, lanes: list[str] | None = None) -> None:
        """A process that exits cleanly takes back what it announced: its slots and its lanes."""
        pipe = self.r.pipeline(transaction=False)
        pipe.hdel(CONSUMERS_KEY, name)
        if lanes:
            pipe.hdel(DEVICES_KEY, *lanes)
        pipe.execute()

    def consumer_slots(self, max_age_s: float) -> dict[str, int]:
        """Queue -> item slots offered by workers that announced within `max_age_s`; entries
        older than an hour are removed."""
        now = time.time()
        slots: dict[str, int] = {}
        stale = []
        for name, raw in self.r.hgetall(CONSUMERS_KEY).items():
            try:
                entry = json.loads(raw)
                age = now - float(entry["at"])
            except (ValueError, KeyError, TypeError):
                stale.append(name)
                continue
            if age > 3600:
                stale.append(name)
            if age > max_age_s:
                continue
            for q in entry.get("queues") or []:
                slots[q] = slots.get(q, 0) + int(entry.get("slots") or 0)
        if stale:
            self.r.hdel(CONSUMERS_KEY, *stale)
        return slots

    # Small per-attempt memory for providers (e.g. the Runway task id).
    def remember(self, item_id: str, attempt: int, name: str, value: str) -> None:
        self.r.set(memo_key(item_id, attempt, name), value, ex=MEMO_TTL_S)

    def recall(self, item_id: str, attempt: int, name: str) -> str | None:
        value = self.r.get(memo_key(item_id, attempt, name))
        return value.decode() if value is not None else None

    # State reports: workers append; the control side reads in batches and acks after its commit.
    def push_report(self, report: dict[str, Any], final: bool = False) -> None:
        """Append a report. A `final` one (an attempt's outcome) is also kept under the attempt, so the
        reconciler can tell a worker that failed from one that vanished, and a duplicate delivery of
        a finished attempt is dropped before it runs again."""
        body = json.dumps(report, separators=(",", ":"))
        pipe = self.r.pipeline(transaction=False)
        pipe.xadd(REPORTS_KEY, {"r": body})
        if final:
            pipe.set(outcome_key(report["item_id"], report["attempt"]), body, ex=MEMO_TTL_S)
        pipe.execute()

    def outcome(self, item_id: str, attempt: int) -> dict[str, Any] | None:
        value = self.r.get(outcome_key(item_id, attempt))
        return json.loads(value) if value is not None else None

    def read_reports(
        self, count: int, block_ms: int | None, pending: bool = False, consumer: str = REPORTS_CONSUMER
    ) -> list[tuple[bytes, dict]]:
        """Up to `count` reports: first those read earlier but never acked (`pending`), else new ones
        (waiting up to `block_ms` for one; None: not at all)."""
        try:
            answer = self.r.xreadgroup(
                REPORTS_GROUP,
                consumer,
                {REPORTS_KEY: "0" if pending else ">"},
                count=count,
                block=None if pending else block_ms,  # never 0: that would wait forever
            )
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # A fresh Redis (or one that lost its data): start reading from the stream's beginning.
            self.ensure_report_group()
            return []
        return [entry for _, rows in answer or [] for entry in _decode(rows)]

    def claim_stale_reports(self, consumer: str, idle_ms: int, count: int) -> list[tuple[bytes, dict]]:
        """Reports another consumer read and has not acked for `idle_ms` (a partition that is no
        longer run, after APPLIER_PARTITIONS was lowered): taken over by `consumer`."""
        try:
            answer = self.r.xautoclaim(REPORTS_KEY, REPORTS_GROUP, consumer, idle_ms, "0-0", count=count)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            return []
        return _decode(answer[1])

    def ensure_report_group(self) -> None:
        try:
            self.r.xgroup_create(REPORTS_KEY, REPORTS_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def ack_reports(self, entry_ids: list[bytes]) -> None:
        if not entry_ids:
            return
        pipe = self.r.pipeline(transaction=False)
        pipe.xack(REPORTS_KEY, REPORTS_GROUP, *entry_ids)
        pipe.xdel(REPORTS_KEY, *entry_ids)
        pipe.execute()

    def reports_waiting(self) -> int:
        return int(self.r.xlen(REPORTS_KEY))

    # Broker data-loss detection: the control side keeps this key; if it vanishes, Redis lost data.
    def epoch(self) -> str | None:
        value = self.r.get(EPOCH_KEY)
        return value.decode() if value is not None else None

    def set_epoch(self, value: str) -> bool:
        return bool(self.r.set(EPOCH_KEY, value, nx=True))

    def lease_grace(self, now: float, gap_s: float, grace_s: float) -> bool:
        """Whether missing leases deserve patience now: for `grace_s` after the reconciler has not
        reached Redis for over `gap_s` (Redis restarted, frozen or unreachable), workers that
        could not renew are given time to take their leases again."""
        pipe = self.r.pipeline(transaction=False)
        pipe.getset(SEEN_KEY, repr(now))
        pipe.get(GRACE_KEY)
        last, until = pipe.execute()
        if last is None or now - float(last) > gap_s:
            self.r.set(GRACE_KEY, repr(now + grace_s), ex=int(grace_s) + 60)
            return True
        return until is not None and now < float(until)


def _decode(rows: list[Any]) -> list[tuple[bytes, dict]]:
    entries: list[tuple[bytes, dict]] = []
    for entry_id, fields in rows:
        try:
            entries.append((entry_id, json.loads(fields[b"r"])))
        except (KeyError, ValueError, TypeError):
            entries.append((entry_id, {}))
    return entries
