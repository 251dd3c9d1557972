"""The wire contract (app/contract/wire.py): what one side builds, the other parses to the same thing;
what does not parse is None and a log line, and the shapes of the previous version still parse."""

from __future__ import annotations

import json
import logging

import pytest

from app.config import reset_settings
from app.contract.wire import (
    CancelledReport,
    FailedReport,
    ItemIdentity,
    ItemMessage,
    Manifest,
    OutputEntry,
    RunningReport,
    SucceededReport,
    WriteGrant,
    WriteGrantRequest,
    parse_report,
)
from app.proofs import item_proof, proof_valid

BASE = {"item_id": "i1", "job_id": "j1", "attempt": 2, "at": 1700000000.5, "input_key": "inputs/a.png"}
LEGEND = [
    {"concept": "cat", "instances": 2, "colour": "#ff0000", "role": "mask_cat", "layer_role": "layer_cat"}
]


def on_the_wire(body: dict) -> dict:
    return json.loads(json.dumps(body))


@pytest.mark.parametrize(
    "report",
    [
        RunningReport(**BASE, state="running", worker="w/1", device="cuda:0"),
        SucceededReport(
            **BASE,
            state="succeeded",
            outputs=[OutputEntry(key="outputs/j1/i1/2/x.png", content_type="image/png", role="x", size=3)],
            meta={"legend": LEGEND, "model_ms": 1.5},
            duration_ms=12.0,
            remote_id="r-1",
        ),
        FailedReport(**BASE, state="failed", error="boom", error_code="oom", retryable=True),
        CancelledReport(**BASE, state="cancelled", detail="stopped by cancel"),
    ],
)
def test_every_report_round_trips_through_json(report: object) -> None:
    assert parse_report(on_the_wire(report.wire())) == report  # type: ignore[attr-defined]


def test_item_message_round_trips_through_json() -> None:
    message = ItemMessage(
        item_id="i1",
        job_id="j1",
        attempt=1,
        provider="echo",
        model="echo",
        input_key="inputs/a.png",
        prompt=None,
        prompts=["cat"],
        params={"delay_s": 0.1},
        deadline_s=600.0,
        proof="p",
        dispatch="d",
    )
    assert ItemMessage.parse(on_the_wire(message.wire())) == message


def test_item_message_of_the_previous_version_parses() -> None:
    # As item_payload wrote it before the contract (no dispatch, an int deadline), with a field
    # this version does not know.
    old = {
        "item_id": "i1",
        "job_id": "j1",
        "attempt": 1,
        "provider": "echo",
        "model": "echo",
        "input_key": "inputs/a.png",
        "prompt": None,
        "prompts": [],
        "params": {},
        "deadline_s": 600,
        "proof": "p",
        "from_the_future": True,
    }
    message = ItemMessage.parse(old)
    assert message is not None and message.deadline_s == 600.0 and message.dispatch is None


@pytest.mark.parametrize(
    "body",
    [
        None,
        "items.run",
        {"item_id": "i1"},
        {**BASE, "provider": "echo", "model": "echo", "attempt": "1"},
        {**BASE, "provider": "echo", "model": "echo", "attempt": 0},
    ],
)
def test_item_message_that_does_not_parse_is_none_and_logged(
    body: object, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="app.contract.wire"):
        assert ItemMessage.parse(body) is None
    assert "dropping an item message that does not parse" in caplog.text


@pytest.mark.parametrize(
    "raw",
    [
        {**BASE, "state": "paused"},
        {**BASE, "state": None},
        {k: v for k, v in BASE.items() if k != "item_id"} | {"state": "running"},
        {**BASE, "attempt": "2", "state": "running"},
        {**BASE, "attempt": True, "state": "running"},
        {**BASE, "state": "succeeded", "outputs": "outputs/j1/i1/2/x.png"},
        {**BASE, "state": "succeeded", "meta": {"legend": [{"concept": "cat"}]}},
        {**BASE, "state": "failed", "retryable": "yes"},
        [],
        "not a report",
    ],
)
def test_a_report_that_does_not_parse_is_none_and_logged(
    raw: object, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="app.contract.wire"):
        assert parse_report(raw) is None
    assert "dropping a report that does not parse" in caplog.text


def test_a_report_of_the_previous_version_parses() -> None:
    # As make_report wrote it: the remote id only in the meta, under its older name.
    old = {
        **BASE,
        "state": "succeeded",
        "proof": "p",
        "outputs": [{"key": "outputs/j1/i1/2/x.png", "content_type": "image/png", "role": "x", "size": 3}],
        "meta": {"runway_task_id": "t-9", "cost_usd": None},
        "worker": "w",
        "duration_ms": 5.0,
        "detail": None,
    }
    report = parse_report(old)
    assert isinstance(report, SucceededReport) and report.remote_id == "t-9"
    assert report.meta == {"runway_task_id": "t-9", "cost_usd": None}


def test_the_proof_holds_for_the_parsed_report_it_was_signed_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_KEY", "k" * 32)
    reset_settings()
    try:
        proof = item_proof("j1", "i1", 2, "inputs/a.png")
        good = parse_report(on_the_wire({**BASE, "state": "cancelled", "proof": proof}))
        other = parse_report(on_the_wire({**BASE, "attempt": 3, "state": "cancelled", "proof": proof}))
        assert good is not None and other is not None
        assert proof_valid(good.signed_fields()) and not proof_valid(other.signed_fields())
    finally:
        monkeypatch.undo()
        reset_settings()


def test_manifest_round_trips_and_checks_the_legend() -> None:
    manifest = Manifest(
        item_id="i1",
        job_id="j1",
        attempt=1,
        outputs=[OutputEntry(key="outputs/j1/i1/1/x.png", content_type="image/png", role="x", size=1)],
        meta={"legend": LEGEND, "model": "demo"},
        worker="w",
        duration_ms=1.0,
        finished_at=1700000000.0,
    )
    assert Manifest.parse(on_the_wire(manifest.wire())) == manifest
    assert Manifest.parse({**manifest.wire(), "meta": {"legend": [{"concept": "cat"}]}}) is None


def test_write_grant_bodies_round_trip() -> None:
    ident = ItemIdentity(item_id="i1", job_id="j1", attempt=1, input_key="inputs/a.png", proof="p")
    asked = WriteGrantRequest(
        **ident.model_dump(), lease="L", outputs=[{"key": "k", "content_type": "image/png"}]
    )
    assert WriteGrantRequest.model_validate(on_the_wire(asked.wire())) == asked
    answer = {"puts": [{"key": "k", "url": "http://x/k", "content_type": "image/png"}], "expires_s": 600}
    assert WriteGrant.model_validate(answer).wire() == answer
