"""Failed sign-ins per client address and email, counted in Redis so every web process sees them.

A fixed window: after `limit` failures the pair is refused until the window that began with the
first failure ends. When Redis is unreachable the count falls back to this process's memory, so a
broker outage neither locks everyone out nor lifts the limit.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time

from app.config import settings
from app.coordination import redis_client

log = logging.getLogger(__name__)

PREFIX = "bulkgen:login-failures:"


class LoginLimiter:
    def __init__(self, limit: int = 10, window_s: int = 300) -> None:
        self.limit = limit
        self.window_s = window_s
        self._local: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(address: str, email: str) -> str:
        digest = hashlib.sha256(f"{address}|{email.strip().lower()}".encode()).hexdigest()[:32]
        return PREFIX + digest

    def retry_after(self, address: str, email: str) -> int:
        """Seconds until this pair may try again; 0 when it may try now."""
        key = self._key(address, email)
        try:
            r = redis_client(settings().broker_url)
            count, ttl = r.pipeline(transaction=False).get(key).ttl(key).execute()
            if count is not None and int(count) >= self.limit:
                return max(int(ttl), 1)
            return 0
        except Exception as exc:  # noqa: BLE001 - Redis down: count in memory instead
            log.debug("login limiter without redis: %s", exc)
        with self._lock:
            count, until = self._local.get(key, (0, 0.0))
            now = time.monotonic()
            if until <= now:
                return 0
            return int(until - now) + 1 if count >= self.limit else 0

    def failed(self, address: str, email: str) -> None:
        key = self._key(address, email)
        try:
            r = redis_client(settings().broker_url)
            pipe = r.pipeline(transaction=True)
            # SET NX starts the window with the first failure; INCR keeps its expiry.
            pipe.set(key, 0, ex=self.window_s, nx=True)
            pipe.incr(key)
            pipe.execute()
            return
        except Exception as exc:  # noqa: BLE001
            log.debug("login limiter without redis: %s", exc)
        with self._lock:
            now = time.monotonic()
            count, until = self._local.get(key, (0, 0.0))
            if until <= now:
                count, until = 0, now + self.window_s
            self._local[key] = (count + 1, until)

    def reset(self, address: str, email: str) -> None:
        key = self._key(address, email)
        with self._lock:
            self._local.pop(key, None)
        try:
            redis_client(settings().broker_url).delete(key)
        except Exception as exc:  # noqa: BLE001
            log.debug("login limiter without redis: %s", exc)


login_limiter = LoginLimiter()
