"""Webhook rules that need no running system: the default retry schedule, event mapping, signing."""

from __future__ import annotations

import base64
import hashlib
import hmac

from app.config import Settings
from app.services.webhooks import destination, signature, webhook_event


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
