"""Failed sign-ins, throttled with Flask-Limiter and counted in Redis so every web process sees them.

Only failed attempts (a 401 from the login form) count, so a right password never uses one up, and
each limit is a moving window (at most N failures in any stretch of that length):

- per client address and account, 10 in 5 minutes: guessing one account's password from one address;
- per client address over all accounts, 15 in 5 minutes: password spraying from one address;
- per account over all addresses, 100 in an hour: generous on purpose. An attacker who fails ten
  times (or ninety) does not lock the real user out when they sign in from another address, and
  guessing spread over many addresses is still held to 100 tries an hour per account.

The client address is the TCP peer (`request.remote_addr`): the app trusts no forwarding header
(no ProxyFix), so X-Forwarded-For cannot make a caller look like someone else. Behind a reverse proxy
every client shares the proxy's address: configure ProxyFix for it before relying on these limits.

When Redis is unreachable the counts fall back to this process's memory (Flask-Limiter's in-memory
fallback; gunicorn runs several processes, so the limits loosen by that factor until Redis is back),
so a broker outage neither locks everyone out nor lifts the limits.
"""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit

from flask import Flask, Response, request
from flask_limiter import Limiter

PER_ADDRESS_AND_ACCOUNT = "10 per 5 minutes"
PER_ADDRESS = "15 per 5 minutes"
PER_ACCOUNT = "100 per hour"
# Redis is asked with short timeouts: a hung broker must not hold a sign-in for long.
REDIS_TIMEOUT_S = 1.0


def client_address() -> str:
    return request.remote_addr or "unknown"


def form_email() -> str:
    return (request.form.get("email") or "").strip().lower()


def _digest(text: str) -> str:
    # Keys stay short whatever was typed, and hold no email address in clear.
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def address_key() -> str:
    return "address:" + client_address()


def account_key() -> str:
    return "account:" + _digest(form_email())


def address_and_account_key() -> str:
    return "pair:" + _digest(f"{client_address()}|{form_email()}")


def failed_sign_in(response: Response) -> bool:
    return response.status_code == 401


limiter = Limiter(
    key_func=client_address,
    key_prefix="bulkgen-login",
    strategy="moving-window",
    headers_enabled=False,
    in_memory_fallback_enabled=True,
    # A Redis error while counting is logged, never a 500: the fallback takes over.
    swallow_errors=True,
)


def storage_uri(broker_url: str) -> str:
    """The broker's Redis holds the counts; a broker that is not Redis leaves them in memory."""
    scheme = urlsplit(broker_url).scheme
    return broker_url if scheme in ("redis", "rediss", "unix") else "memory://"


def init_app(flask_app: Flask) -> None:
    uri = storage_uri(flask_app.extensions["bulkgen.settings"].broker_url)
    flask_app.config["RATELIMIT_STORAGE_URI"] = uri
    if uri != "memory://":
        flask_app.config["RATELIMIT_STORAGE_OPTIONS"] = {
            "socket_connect_timeout": REDIS_TIMEOUT_S,
            "socket_timeout": REDIS_TIMEOUT_S,
        }
    limiter.init_app(flask_app)
