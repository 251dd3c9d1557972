"""A job's status and progress follow from its items' statuses (app/services/items.py
`derive_status`, app/serializers.py `job_progress`): pure functions of the job's counts, tested on
job rows with no database."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import get_args

from app.contract import api as contract
from app.models import ITEM_STATUSES, JOB_STATUSES, Job
from app.serializers import job_progress
from app.services.items import derive_status

AT = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def job(job_cancelled: bool = False, job_paused: bool = False, **items: int) -> Job:
    """A job whose items stand at `items` (status -> how many), as its n_* columns hold them;
    `job_cancelled` / `job_paused`: someone cancelled / paused the job itself."""
    return Job(
        total=sum(items.values()),
        cancelled_at=AT if job_cancelled else None,
        paused_at=AT if job_paused else None,
        **{f"n_{status}": items.get(status, 0) for status in ITEM_STATUSES},
    )


def test_a_job_whose_items_all_wait_is_queued() -> None:
    assert derive_status(job(pending=3)) == "queued"
    assert derive_status(job(pending=1, queued=2)) == "queued"


def test_a_job_with_one_item_running_is_running() -> None:
    assert derive_status(job(pending=2, running=1)) == "running"


def test_a_job_with_some_items_finished_and_none_running_right_now_is_running() -> None:
    # Between two items the window can be empty; the job has started all the same.
    assert derive_status(job(succeeded=1, pending=4)) == "running"
    assert derive_status(job(failed=1, queued=1)) == "running"


def test_a_job_whose_items_all_succeeded_is_succeeded() -> None:
    assert derive_status(job(succeeded=5)) == "succeeded"


def test_a_job_with_one_failed_item_and_the_rest_succeeded_is_failed() -> None:
    finished = job(succeeded=9, failed=1)
    assert derive_status(finished) == "failed"
    # The counts tell how many failed.
    assert finished.counts() == {**dict.fromkeys(ITEM_STATUSES, 0), "succeeded": 9, "failed": 1}


def test_a_job_is_not_failed_while_some_of_its_items_are_still_to_run() -> None:
    assert derive_status(job(failed=1, running=1, succeeded=3)) == "running"
    assert derive_status(job(failed=1, pending=1)) == "running"


def test_a_cancelled_job_is_cancelled_even_when_an_item_failed_before_the_cancel() -> None:
    assert derive_status(job(job_cancelled=True, succeeded=2, failed=1, cancelled=3)) == "cancelled"


def test_a_cancelled_job_stays_running_until_its_running_items_stop() -> None:
    assert derive_status(job(job_cancelled=True, running=1, cancelled=3)) == "running"


def test_a_job_cancelled_after_its_last_item_finished_keeps_its_outcome() -> None:
    # The cancel came too late to stop anything: no item was cancelled.
    assert derive_status(job(job_cancelled=True, succeeded=4)) == "succeeded"
    assert derive_status(job(job_cancelled=True, succeeded=3, failed=1)) == "failed"


def test_items_cancelled_one_by_one_make_the_job_failed_if_another_item_failed() -> None:
    assert derive_status(job(cancelled=2, failed=1, succeeded=1)) == "failed"


def test_items_cancelled_one_by_one_and_the_rest_succeeded_make_the_job_cancelled() -> None:
    assert derive_status(job(cancelled=2, succeeded=1)) == "cancelled"


def test_a_paused_job_with_work_left_is_paused_whatever_already_ran() -> None:
    assert derive_status(job(job_paused=True, pending=3)) == "paused"
    assert derive_status(job(job_paused=True, succeeded=2, running=1, pending=3)) == "paused"


def test_a_paused_job_whose_items_all_finished_has_their_outcome() -> None:
    # The items that were running when it was paused finished, and nothing else was left.
    assert derive_status(job(job_paused=True, succeeded=3)) == "succeeded"
    assert derive_status(job(job_paused=True, succeeded=2, failed=1)) == "failed"


def test_every_derived_status_is_a_job_status() -> None:
    seen = {
        derive_status(job(job_cancelled=c, job_paused=p, **{s: n, "succeeded": 1}))
        for s in ITEM_STATUSES
        for n in (0, 2)
        for c in (False, True)
        for p in (False, True)
    } | {derive_status(job(pending=2)), derive_status(job(cancelled=1))}
    assert seen == set(JOB_STATUSES)


def test_the_api_documents_exactly_the_statuses_jobs_and_items_can_have() -> None:
    assert set(get_args(contract.JobStatus)) == set(JOB_STATUSES)
    assert set(get_args(contract.ItemStatus)) == set(ITEM_STATUSES)


def test_progress_counts_every_finished_item_failed_and_cancelled_included() -> None:
    assert job_progress(job(succeeded=2, failed=1, cancelled=1, pending=4)) == 0.5


def test_progress_adds_how_far_the_running_items_are() -> None:
    # Two running items, each halfway: one item's worth of progress.
    assert job_progress(job(succeeded=1, running=2, pending=1), running_progress=1.0) == 0.5


def test_progress_of_a_finished_job_is_one_and_never_more() -> None:
    assert job_progress(job(succeeded=3)) == 1.0
    # A running report applied late can add to a count that already says done.
    assert job_progress(job(succeeded=3), running_progress=0.7) == 1.0
