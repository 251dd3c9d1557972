"""Webhook rules that need no running system: retry schedule, event mapping, signing, address pinning."""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app.config import Settings, reset_settings
from app.services.webhook_delivery import pinned_session
from app.services.webhooks import DestinationRefused, destination, signature, webhook_event


def test_default_retries_cover_a_day() -> None:
    delays = Settings.webhook_retry_delays_s
    assert sum(delays) >= 24 * 3600
    assert list(delays) == sorted(delays)  # backing off, never hurrying back


def test_which_log_entries_are_webhook_events() -> None:
    assert webhook_event("item.succeeded", "succeeded") == "item.completed"
    assert webhook_event("item.failed", "failed") == "item.failed"
    assert webhook_event("item.retry", "pending") is None  # not final: another attempt follows
    for final in ("succeeded", "failed", "cancelled"):
        assert webhook_event("job.status", final) == "job.completed"
    assert webhook_event("job.status", "running") is None


def test_signature_is_the_specifications_hmac() -> None:
    key = base64.b64encode(b"k" * 24).decode()
    expected = base64.b64encode(hmac.new(b"k" * 24, b"msg_1.1700000000.{}", hashlib.sha256).digest()).decode()
    assert signature("msg_1", 1700000000, "{}", ["whsec_" + key]) == "v1," + expected
    assert len(signature("msg_1", 1700000000, "{}", ["whsec_" + key, "whsec_" + key]).split(" ")) == 2


def test_destination_counts_host_and_port() -> None:
    assert destination("https://hooks.example.com/a") == "hooks.example.com:443"
    assert destination("http://hooks.example.com:8080/a?b=c") == "hooks.example.com:8080"


def test_the_sender_connects_only_to_checked_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check happens when the connection is made, not only before: the name is resolved and
    checked by the connection itself (a name re-pointed after a first check is caught)."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            hits.append(self.path)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://localhost:{server.server_address[1]}/hook"
    try:
        monkeypatch.delenv("WEBHOOK_ALLOW_PRIVATE", raising=False)
        reset_settings()
        with pytest.raises(DestinationRefused, match="internal address"):
            pinned_session().post(url, data=b"{}", timeout=5)
        assert hits == []
        monkeypatch.setenv("WEBHOOK_ALLOW_PRIVATE", "1")
        reset_settings()
        assert pinned_session().post(url, data=b"{}", timeout=5).status_code == 204
        assert hits == ["/hook"]
    finally:
        reset_settings()
        server.shutdown()
