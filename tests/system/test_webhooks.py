"""Webhooks through the running system: real control worker, real HTTP receivers on loopback.

Signatures are checked with the `standardwebhooks` package (the specification's reference library),
not with our own code."""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from standardwebhooks.webhooks import Webhook

from tests.conftest import System, SystemFactory
from tests.support import distinct_pngs


class Receiver:
    """An HTTP server on loopback that records deliveries; each path behaves as told."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.fail_first: dict[str, int] = {}  # path -> answer 500 this many times first
        self.hang: dict[str, threading.Event] = {}  # path -> hold the answer until set
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length") or 0)).decode()
                with receiver.lock:
                    receiver.received.append(
                        {
                            "path": self.path,
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                            "body": body,
                        }
                    )
                    seen = sum(1 for r in receiver.received if r["path"] == self.path)
                    failing = seen <= receiver.fail_first.get(self.path, 0)
                gate = receiver.hang.get(self.path)
                if gate is not None:
                    gate.wait(120)
                self.send_response(500 if failing else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def at(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.received if r["path"] == path]

    def wait_for(self, path: str, count: int, timeout: float = 90.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.at(path)
            if len(got) >= count:
                return got
            time.sleep(0.1)
        raise AssertionError(f"{path}: {len(self.at(path))} deliveries after {timeout} s, wanted {count}")

    def close(self) -> None:
        for gate in self.hang.values():
            gate.set()
        self.server.shutdown()


@pytest.fixture(scope="module")
def hooks(systems: SystemFactory) -> System:
    # The receivers are on loopback, which only the override allows. A long timeout keeps the hanging
    # receiver's request in flight while other deliveries go out; a short retry schedule (three
    # retries) lets a test see a delivery given up.
    env = {"WEBHOOK_ALLOW_PRIVATE": "1", "WEBHOOK_TIMEOUT_S": "60", "WEBHOOK_RETRY_DELAYS_S": "1,2,2"}
    return systems.start("webhooks", workers=("control", "wan_local"), env=env)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _secret(system: System) -> str:
    r = system.api.get("/api/v1/account")
    assert r.status_code == 200, r.text
    return r.json()["webhook_secret"]


def _deliveries(system: System, job_id: str) -> list[dict[str, Any]]:
    r = system.api.get(f"/api/v1/jobs/{job_id}/webhooks")
    assert r.status_code == 200, r.text
    return r.json()["deliveries"]


def test_signed_deliveries_in_order_per_job(hooks: System, receiver: Receiver) -> None:
    keys = hooks.api.upload(distinct_pngs(3, seed=400))
    job = hooks.api.submit(
        keys,
        params={"delay_s": 0.2},
        webhook=f"{receiver.url}/events",
        webhook_events=["item.completed", "job.completed"],
    )
    assert job["webhook"] == f"{receiver.url}/events"
    assert job["webhook_events"] == ["item.completed", "job.completed"]
    got = receiver.wait_for("/events", 4)
    verifier = Webhook(_secret(hooks))
    bodies = []
    for r in got:
        # The reference implementation checks the signature and the timestamp's freshness.
        bodies.append(verifier.verify(r["body"], r["headers"]))
        assert r["headers"]["content-type"] == "application/json"
    assert [b["type"] for b in bodies] == ["item.completed"] * 3 + ["job.completed"]
    assert {b["data"]["id"] for b in bodies[:3]} == {i["id"] for i in hooks.api.job(job["id"])["items"]}
    assert all(b["data"]["status"] == "succeeded" and b["data"]["outputs"] for b in bodies[:3])
    assert bodies[3]["data"]["id"] == job["id"] and bodies[3]["data"]["status"] == "succeeded"
    assert bodies[3]["data"]["counts"]["succeeded"] == 3
    assert len({r["headers"]["webhook-id"] for r in got}) == 4
    # A forged body does not verify.
    tampered = got[0]["body"].replace("succeeded", "failed")
    with pytest.raises(Exception, match="(?i)signature"):
        verifier.verify(tampered, got[0]["headers"])
    log = _deliveries(hooks, job["id"])
    assert [d["event"] for d in log] == ["item.completed"] * 3 + ["job.completed"]
    assert all(d["status"] == "delivered" and d["last_status_code"] == 200 for d in log), log
    assert all(d["attempts"] == 1 and d["last_latency_ms"] is not None for d in log), log


def test_only_job_completed_by_default_and_failed_items_reported(hooks: System, receiver: Receiver) -> None:
    keys = hooks.api.upload(distinct_pngs(2, seed=410))
    plain = hooks.api.submit(keys, webhook=f"{receiver.url}/default")
    assert plain["webhook_events"] == ["job.completed"]
    failing = hooks.api.submit(
        keys, params={"fail": "fatal"}, webhook=f"{receiver.url}/failed", webhook_events=["item.failed"]
    )
    default = [json.loads(r["body"]) for r in receiver.wait_for("/default", 1)]
    failed = [json.loads(r["body"]) for r in receiver.wait_for("/failed", 2)]
    assert hooks.api.wait(plain["id"])["status"] == "succeeded"
    assert hooks.api.wait(failing["id"])["status"] == "failed"
    time.sleep(2)  # room for anything that should not come
    assert [b["type"] for b in default] == ["job.completed"] and len(receiver.at("/default")) == 1
    assert [b["type"] for b in failed] == ["item.failed", "item.failed"] and len(receiver.at("/failed")) == 2
    assert all(b["data"]["error_code"] == "injected" for b in failed)


def test_retried_with_the_same_webhook_id_until_it_succeeds(hooks: System, receiver: Receiver) -> None:
    receiver.fail_first["/flaky"] = 2
    keys = hooks.api.upload(distinct_pngs(1, seed=420))
    job = hooks.api.submit(keys, webhook=f"{receiver.url}/flaky")
    got = receiver.wait_for("/flaky", 3)
    time.sleep(2)
    got = receiver.at("/flaky")
    assert len(got) == 3, [r["headers"]["webhook-id"] for r in got]
    assert len({r["headers"]["webhook-id"] for r in got}) == 1
    assert len({r["body"] for r in got}) == 1  # the same bytes every time
    verifier = Webhook(_secret(hooks))
    for r in got:
        verifier.verify(r["body"], r["headers"])
    deadline = time.monotonic() + 30
    while True:
        (log,) = _deliveries(hooks, job["id"])
        if log["status"] == "delivered" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert log["status"] == "delivered" and log["attempts"] == 3 and log["last_status_code"] == 200, log

    # Redeliver: sent once more, same webhook-id.
    r = hooks.api.post(f"/api/v1/jobs/{job['id']}/webhooks/{log['id']}/redeliver")
    assert r.status_code == 200 and r.json()["status"] == "pending", r.text
    again = receiver.wait_for("/flaky", 4)
    assert again[-1]["headers"]["webhook-id"] == got[0]["headers"]["webhook-id"]


def test_given_up_after_the_schedule_then_redelivered(hooks: System, receiver: Receiver) -> None:
    receiver.fail_first["/down"] = 5  # the schedule allows 1 + 3 attempts
    keys = hooks.api.upload(distinct_pngs(1, seed=425))
    job = hooks.api.submit(keys, webhook=f"{receiver.url}/down")
    receiver.wait_for("/down", 4)
    deadline = time.monotonic() + 30
    while (log := _deliveries(hooks, job["id"])[0])["status"] == "pending" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert log["status"] == "failed" and log["attempts"] == 4, log
    assert (
        log["last_status_code"] == 500 and log["last_error"] == "HTTP 500" and log["next_attempt_at"] is None
    )
    time.sleep(3)
    assert len(receiver.at("/down")) == 4
    metrics = hooks.api.get("/metrics").text
    failed = re.search(r'^bulkgen_webhook_deliveries\{status="failed"\} (\S+)$', metrics, re.M)
    assert failed and float(failed.group(1)) >= 1, metrics[-2000:]
    r = hooks.api.post(f"/api/v1/jobs/{job['id']}/webhooks/{log['id']}/redeliver")
    assert r.status_code == 200, r.text
    receiver.wait_for("/down", 5)  # the fifth answer is a 500 too, the sixth a 200
    receiver.wait_for("/down", 6)
    deadline = time.monotonic() + 30
    while (log := _deliveries(hooks, job["id"])[0])["status"] != "delivered" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert log["status"] == "delivered" and log["attempts"] == 6, log
    r = hooks.api.post(f"/api/v1/jobs/{job['id']}/webhooks/999999999/redeliver")
    assert r.status_code == 404, r.text


def test_a_hanging_receiver_does_not_delay_another(hooks: System, receiver: Receiver) -> None:
    gate = threading.Event()
    receiver.hang["/hang"] = gate
    slow = Receiver()  # another destination (port) for the hanging one
    slow.hang["/hang"] = gate
    try:
        keys = hooks.api.upload(distinct_pngs(2, seed=430))
        hanging = hooks.api.submit(keys[:1], webhook=f"{slow.url}/hang")
        slow.wait_for("/hang", 1)  # its request is now held open by the receiver
        other = hooks.api.submit(keys[1:], webhook=f"{receiver.url}/prompt")
        receiver.wait_for("/prompt", 1)
        # Delivered while the hanging request was still open: its attempt has no outcome yet (it
        # would have one, a timeout, had the sender waited for it first).
        (held,) = _deliveries(hooks, hanging["id"])
        assert held["attempts"] == 0 and held["status"] == "pending", held
        (log,) = _deliveries(hooks, other["id"])
        assert log["status"] == "delivered", log
    finally:
        gate.set()
        slow.close()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",  # a name that resolves to loopback
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://2130706433/hook",  # 127.0.0.1 written as a number, resolved by the system's resolver
    ],
)
def test_internal_destinations_refused_at_submission(api: Any, url: str) -> None:
    keys = api.upload(distinct_pngs(1, seed=440))
    r = api.post("/api/v1/jobs", json={"provider": "echo", "inputs": keys, "webhook": url})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["field"] == "webhook" and "internal address" in error["message"], error


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"webhook": "ftp://example.com/x"}, "webhook"),
        ({"webhook": 12}, "webhook"),
        # A public address written as an IP, so no name has to resolve here.
        # The contract names the entry that is wrong.
        ({"webhook": "https://93.184.216.34/x", "webhook_events": ["job.done"]}, "webhook_events[0]"),
        ({"webhook_events": ["job.completed"]}, "webhook_events"),
    ],
)
def test_bad_webhook_fields_are_400s(api: Any, body: dict[str, Any], field: str) -> None:
    keys = api.upload(distinct_pngs(1, seed=441))
    r = api.post("/api/v1/jobs", json={"provider": "echo", "inputs": keys, **body})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["field"] == field, r.text


def test_secret_rotation_signs_with_both_for_a_while(hooks: System, receiver: Receiver) -> None:
    old = _secret(hooks)
    r = hooks.api.post("/api/v1/account/webhook-secret")
    assert r.status_code == 200, r.text
    new = r.json()["webhook_secret"]
    assert new != old and new.startswith("whsec_")
    keys = hooks.api.upload(distinct_pngs(1, seed=450))
    hooks.api.submit(keys, webhook=f"{receiver.url}/rotated")
    (got,) = receiver.wait_for("/rotated", 1)
    assert len(got["headers"]["webhook-signature"].split(" ")) == 2
    Webhook(new).verify(got["body"], got["headers"])
    Webhook(old).verify(got["body"], got["headers"])


def _signed_in(system: System) -> tuple[requests.Session, str]:
    """A browser-like session signed in through the login form; returns it and a CSRF token."""
    system.stack.flask("create-user", "hooks@example.com", "--password", "hooks-password-1")
    s = requests.Session()
    page = s.get(system.base_url + "/login", timeout=30).text
    token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
    r = s.post(
        system.base_url + "/login",
        data={"csrf_token": token, "email": "hooks@example.com", "password": "hooks-password-1"},
        allow_redirects=False,
        timeout=30,
    )
    assert r.status_code == 302, r.text
    page = s.get(system.base_url + "/account", timeout=30).text
    return s, re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)


def test_delivery_log_and_secret_on_the_pages(hooks: System, receiver: Receiver) -> None:
    s, csrf = _signed_in(hooks)
    account = s.get(hooks.base_url + "/account", timeout=30).text
    secret = re.search(r'id="secret-value">(whsec_[^<]+)<', account).group(1)
    keys = hooks.api.upload(distinct_pngs(1, seed=460))
    # Submitted through the API by the token's user; the page shows any job's log.
    job = hooks.api.submit(keys, webhook=f"{receiver.url}/page")
    (first,) = receiver.wait_for("/page", 1)
    deadline = time.monotonic() + 30
    while _deliveries(hooks, job["id"])[0]["status"] != "delivered" and time.monotonic() < deadline:
        time.sleep(0.2)
    page = s.get(f"{hooks.base_url}/jobs/{job['id']}", timeout=30).text
    assert "Webhook deliveries" in page and "job.completed" in page and ">delivered<" in page, page
    (log,) = _deliveries(hooks, job["id"])
    r = s.post(
        f"{hooks.base_url}/jobs/{job['id']}/webhooks/{log['id']}/redeliver",
        data={"csrf_token": csrf},
        allow_redirects=False,
        timeout=30,
    )
    assert r.status_code == 302, r.text
    again = receiver.wait_for("/page", 2)
    assert again[1]["headers"]["webhook-id"] == first["headers"]["webhook-id"]
    # The page's user is not the token's user: this secret did not sign the API job's delivery.
    with pytest.raises(Exception, match="(?i)signature"):
        Webhook(secret).verify(first["body"], first["headers"])
    r = s.post(hooks.base_url + "/account/webhook-secret", data={"csrf_token": csrf}, timeout=30)
    assert r.status_code == 200 and "New signing secret" in r.text, r.text
    rotated = re.search(r'id="secret-value">(whsec_[^<]+)<', r.text).group(1)
    assert rotated != secret


def test_control_worker_killed_mid_delivery_sends_it_again(
    systems: SystemFactory, receiver: Receiver
) -> None:
    # A short timeout makes the claim (timeout + 30 s) run out soon after the crash.
    env = {"WEBHOOK_ALLOW_PRIVATE": "1", "WEBHOOK_TIMEOUT_S": "5"}
    sysm = systems.start("webhooks-crash", workers=("control", "wan_local"), env=env)
    gate = threading.Event()
    receiver.hang["/crash"] = gate  # the first request is held open ...
    keys = sysm.api.upload(distinct_pngs(1, seed=470))
    job = sysm.api.submit(keys, webhook=f"{receiver.url}/crash")
    (first,) = receiver.wait_for("/crash", 1)
    sysm.stack.procs["control"].signal(signal.SIGKILL)  # ... while the control worker dies
    del receiver.hang["/crash"]  # the next request is answered
    again = receiver.wait_for("/crash", 2, timeout=120)  # the supervisor restarts it; the claim runs out
    gate.set()
    assert again[1]["headers"]["webhook-id"] == first["headers"]["webhook-id"]
    assert again[1]["body"] == first["body"]
    deadline = time.monotonic() + 30
    while (log := _deliveries(sysm, job["id"])[0])["status"] != "delivered" and time.monotonic() < deadline:
        time.sleep(0.2)
    # The killed attempt left no outcome: one attempt is on record, and it succeeded.
    assert log["status"] == "delivered" and log["attempts"] == 1, log
    time.sleep(2)
    assert len(receiver.at("/crash")) == 2
