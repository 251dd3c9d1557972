"""Which report moves an item where (app/services/reports.py `transition`): a pure function of the
locked row and the report, tested on rows. Reports arrive at least once and in any order."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from app.contract.wire import (
    CancelledReport,
    FailedReport,
    OutputEntry,
    Report,
    RunningReport,
    SucceededReport,
)
from app.services.reports import ItemRow, transition

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
STATUSES = ("pending", "queued", "running", "succeeded", "failed", "cancelled")


def row(status: str, attempt: int = 1, max_attempts: int = 3) -> ItemRow:
    return ItemRow("i1", "j1", "wan_local", status, attempt, max_attempts)


def running(attempt: int = 1) -> RunningReport:
    return RunningReport(
        state="running", item_id="i1", job_id="j1", attempt=attempt, worker="w", device="cpu"
    )


def succeeded(attempt: int = 1, **kw: Any) -> SucceededReport:
    outputs = [OutputEntry(key=f"outputs/j1/i1/{attempt}/echo.png", content_type="image/png", role="echo")]
    return SucceededReport(
        **{
            "state": "succeeded",
            "item_id": "i1",
            "job_id": "j1",
            "attempt": attempt,
            "outputs": outputs,
            **kw,
        }
    )


def failed(attempt: int = 1, retryable: bool = False) -> FailedReport:
    return FailedReport(
        state="failed",
        item_id="i1",
        job_id="j1",
        attempt=attempt,
        error="boom",
        error_code="E",
        retryable=retryable,
    )


def cancelled(attempt: int = 1) -> CancelledReport:
    return CancelledReport(state="cancelled", item_id="i1", job_id="j1", attempt=attempt)


def to(item: ItemRow, report: Report) -> str | None:
    change = transition(item, report, NOW)
    return None if change is None else change[0]


@pytest.mark.parametrize(
    ("status", "expected"),
    [("pending", "running"), ("queued", "running"), ("running", None), ("succeeded", None)],
)
def test_running_moves_only_an_item_that_has_not_started(status: str, expected: str | None) -> None:
    assert to(row(status), running()) == expected


@pytest.mark.parametrize("status", STATUSES)
def test_an_outcome_ends_only_an_item_still_alive(status: str) -> None:
    alive = status in ("pending", "queued", "running")
    assert to(row(status), succeeded()) == ("succeeded" if alive else None)
    assert to(row(status), failed()) == ("failed" if alive else None)
    assert to(row(status), cancelled()) == ("cancelled" if alive else None)


def test_a_report_for_another_attempt_changes_nothing() -> None:
    # A late report of attempt 1 after the item moved to attempt 2, and one from the future.
    for report in (running(1), succeeded(1), failed(1), cancelled(1), succeeded(3)):
        assert transition(row("running", attempt=2), report, NOW) is None


def test_a_duplicate_outcome_after_the_first_changes_nothing() -> None:
    item = row("running")
    status, values, _ = transition(item, succeeded(), NOW)  # type: ignore[misc]
    item.status = status
    assert transition(item, succeeded(), NOW) is None
    assert transition(item, failed(), NOW) is None


def test_a_late_running_after_the_outcome_changes_nothing() -> None:
    assert to(row("succeeded"), running()) is None
    assert to(row("failed"), running()) is None


def test_an_outcome_before_its_running_report_ends_the_item() -> None:
    # The `running` report was lost or is still on its way: the success stands on its own.
    status, values, _ = transition(row("queued"), succeeded(started_at=NOW.timestamp() - 5), NOW)  # type: ignore[misc]
    assert status == "succeeded" and values["started_at"].timestamp() == NOW.timestamp() - 5


def test_a_retryable_failure_goes_back_to_pending_on_the_next_attempt() -> None:
    status, values, event = transition(row("running", attempt=1), failed(retryable=True), NOW)  # type: ignore[misc]
    assert status == "pending" and values["attempt"] == 2
    assert event["kind"] == "item.retry" and event["attempt"] == 2


def test_a_retryable_failure_on_the_last_attempt_fails_the_item() -> None:
    status, values, _ = transition(row("running", attempt=3), failed(3, retryable=True), NOW)  # type: ignore[misc]
    assert status == "failed" and "gave up after 3 attempts" in values["error"]


def test_a_failure_that_is_not_retryable_fails_at_once() -> None:
    status, values, _ = transition(row("running", attempt=1), failed(retryable=False), NOW)  # type: ignore[misc]
    assert status == "failed" and values["error"] == "boom" and values["error_code"] == "E"


def test_a_success_naming_outputs_outside_its_attempt_changes_nothing() -> None:
    for key in ("outputs/j1/i1/2/x.png", "inputs/x.png", "outputs/j1/i1/1/../../other/1/x.png"):
        report = succeeded(outputs=[OutputEntry(key=key)])
        assert transition(row("running"), report, NOW) is None, key


def test_a_success_records_its_outputs_manifest_and_remote_id() -> None:
    report = succeeded(meta={"remote_id": "task-7", "cost_usd": 0.25})
    status, values, _ = transition(row("running"), report, NOW)  # type: ignore[misc]
    assert status == "succeeded"
    assert values["outputs"] == [
        {"key": "outputs/j1/i1/1/echo.png", "content_type": "image/png", "role": "echo", "size": None}
    ]
    assert values["manifest_key"] == "outputs/j1/i1/1/manifest.json"
    assert values["remote_id"] == "task-7" and values["cost_usd"] == 0.25
    assert values["error"] is None and values["progress"] == 1.0
