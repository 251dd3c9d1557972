"""A worker's storage, through grants: presigned URLs the web app issues per item and attempt.

The host holds no storage keys (app/services/grants.py says what is granted when). Each ItemRun
has one `ItemStorage`: a read grant for its input and manifest, asked for once and kept, and a
write grant for exactly the objects it commits, asked for under the lease.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import requests

from app.config import settings
from app.contract.wire import (
    ItemIdentity,
    ItemMessage,
    OutputRequest,
    ReadGrant,
    WriteGrant,
    WriteGrantRequest,
)
from app.storage import NotFound

log = logging.getLogger(__name__)
# What the web app is given to answer a grant request or a transfer (uploads may be videos).
GRANT_TIMEOUT_S = (5.0, 30.0)
TRANSFER_TIMEOUT_S = (10.0, 300.0)
# Exit status of a host whose worker token is refused: a configuration error (EX_CONFIG), which a
# supervisor should not restart into (systemd: RestartPreventExitStatus=78).
EXIT_TOKEN_REFUSED = 78


class HostRefused(Exception):
    """The web app refused this host's worker token (missing, invalid or revoked)."""


class GrantDenied(Exception):
    """The web app refused a grant for this delivery: `code` says why (cancelled, recalled,
    not_current, lease_not_held, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"storage grant refused ({code}): {message}")
        self.code = code


_local = threading.local()
_stopping = threading.Event()


def _session() -> requests.Session:
    # A session per thread: item threads fetch and commit at the same time.
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
    return session


def call(method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """One request to the web app's worker API; connection trouble and 5xx raise for a retry."""
    s = settings()
    if not s.worker_token:
        raise HostRefused(
            "BULKGEN_WORKER_TOKEN is not set: create one with `flask --app web create-worker-token NAME`"
        )
    resp = _session().request(
        method,
        f"{s.web_url}/api/v1/worker{path}",
        json=body,
        headers={"Authorization": f"Bearer {s.worker_token}"},
        timeout=GRANT_TIMEOUT_S,
    )
    if resp.status_code == 401:
        raise HostRefused(f"the web app refused this host's worker token: {_message(resp)}")
    if 400 <= resp.status_code < 500:
        error = _error(resp)
        raise GrantDenied(
            str(error.get("code") or resp.status_code), str(error.get("message") or resp.text[:200])
        )
    resp.raise_for_status()
    return resp.json()


def _error(resp: requests.Response) -> dict[str, Any]:
    try:
        error = resp.json().get("error")
    except ValueError:
        return {}
    return error if isinstance(error, dict) else {}


def _message(resp: requests.Response) -> str:
    return str(_error(resp).get("message") or f"HTTP {resp.status_code}")


def stop_host(reason: str) -> None:
    """This host may take nothing more: warm shutdown (what it prefetched goes back to the queue)."""
    if _stopping.is_set():
        return
    _stopping.set()
    log.critical("stopping this worker: %s", reason)
    os.kill(os.getpid(), signal.SIGTERM)


def check_token(patience_s: float = 60.0) -> None:
    """At start: exit at once on a refused token; wait for a web app that is not up yet."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            name = call("GET", "/hello").get("name")
            log.info("worker token accepted (%s)", name)
            return
        except HostRefused as exc:
            log.critical("%s; this worker exits", exc)
            logging.shutdown()
            os._exit(EXIT_TOKEN_REFUSED)
        except Exception as exc:  # noqa: BLE001 - web app not up yet: storage grants come from it
            if time.monotonic() > deadline:
                log.error("the web app (%s) does not answer: %s; exiting", settings().web_url, exc)
                logging.shutdown()
                os._exit(1)
            log.warning("waiting for the web app at %s: %s", settings().web_url, exc)
            time.sleep(2.0)


class ItemStorage:
    """The storage one delivery of one item may touch."""

    def __init__(self, message: ItemMessage) -> None:
        self.identity = ItemIdentity.of(message)
        self._read: ReadGrant | None = None

    def read_grant(self, fresh: bool = False) -> ReadGrant:
        if self._read is None or fresh:
            self._read = ReadGrant.model_validate(call("POST", "/grants/read", self.identity.wire()))
        return self._read

    @property
    def input_url(self) -> str | None:
        return self._read.input.url if self._read else None

    def download_input(self, path: Path) -> None:
        """The input, written atomically to `path`; NotFound when it is gone from storage."""
        grant = self.read_grant().input
        tmp = path.with_name(path.name + ".part")
        with _session().get(grant.url, stream=True, timeout=TRANSFER_TIMEOUT_S) as resp:
            self._raise_for(resp, grant.key)
            with open(tmp, "wb") as out:
                for chunk in resp.iter_content(1024 * 1024):
                    out.write(chunk)
        os.replace(tmp, path)

    def manifest(self) -> bytes | None:
        """The attempt's manifest if it was committed, else None."""
        grant = self.read_grant().manifest
        resp = _session().get(grant.url, timeout=TRANSFER_TIMEOUT_S)
        if resp.status_code == 404:
            return None
        self._raise_for(resp, grant.key)
        return resp.content

    def write_grant(self, lease_token: str, objects: list[tuple[str, str]]) -> dict[str, str]:
        """PUT URLs for (key, content type) under the attempt's prefix; needs the lease."""
        body = WriteGrantRequest(
            **self.identity.model_dump(),
            lease=lease_token,
            outputs=[OutputRequest(key=key, content_type=ct) for key, ct in objects],
        )
        grant = WriteGrant.model_validate(call("POST", "/grants/write", body.wire()))
        return {put.key: put.url for put in grant.puts}

    @staticmethod
    def put(url: str, data: bytes | Path, content_type: str) -> None:
        with open(data, "rb") if isinstance(data, Path) else contextlib.nullcontext(data) as body:
            resp = _session().put(
                url, data=body, headers={"Content-Type": content_type}, timeout=TRANSFER_TIMEOUT_S
            )
        resp.raise_for_status()

    def _raise_for(self, resp: requests.Response, key: str) -> None:
        if resp.status_code == 404:
            raise NotFound(key)
        if resp.status_code == 403:
            # Expired while waiting (a long prefetch queue): the next try asks for a fresh grant.
            self._read = None
        resp.raise_for_status()
