"""The scheduler's order (app/services/order.py): a pure function, tested on rows."""

from __future__ import annotations

from collections import Counter

from app.services.order import Candidate, Limits, choose


def items(
    job: str, n: int, user: int = 1, priority: str = "normal", order: float = 0.0, **kw
) -> list[Candidate]:
    return [
        Candidate(
            item_id=f"{job}-{i}", job_id=job, user=user, priority=priority, idx=i, job_order=order, **kw
        )
        for i in range(n)
    ]


def ids(picks: list[Candidate]) -> list[str]:
    return [c.item_id for c in picks]


def test_item_order_inside_a_job() -> None:
    assert ids(choose(list(reversed(items("a", 3))), 3, Limits())) == ["a-0", "a-1", "a-2"]


def test_priority_class_first_whatever_was_submitted_first() -> None:
    picks = choose(items("old", 5, order=1) + items("urgent", 2, priority="high", order=2), 3, Limits())
    assert ids(picks) == ["urgent-0", "urgent-1", "old-0"]


def test_low_priority_waits_for_normal() -> None:
    picks = choose(items("low", 3, priority="low", order=1) + items("n", 1, order=2), 2, Limits())
    assert ids(picks) == ["n-0", "low-0"]


def test_round_robin_across_one_users_jobs() -> None:
    picks = choose(items("big", 300, order=1) + items("small", 3, order=2), 6, Limits())
    assert ids(picks) == ["big-0", "small-0", "big-1", "small-1", "big-2", "small-2"]


def test_a_small_job_goes_first_when_the_big_one_already_runs() -> None:
    limits = Limits(job_in_flight=Counter({"big": 2}), user_in_flight_here=Counter({1: 2}))
    picks = choose(items("big", 300, order=1) + items("small", 3, order=2), 3, limits)
    assert ids(picks) == ["small-0", "small-1", "big-0"]


def test_fair_share_across_users_before_jobs() -> None:
    # User 1 has two jobs, user 2 one: users alternate, and user 1's turns alternate its jobs.
    cands = (
        items("u1a", 10, user=1, order=1)
        + items("u1b", 10, user=1, order=2)
        + items("u2", 10, user=2, order=3)
    )
    picks = choose(cands, 6, Limits())
    assert Counter(c.user for c in picks) == {1: 3, 2: 3}
    assert ids(picks)[:4] == ["u1a-0", "u2-0", "u1b-0", "u2-1"]


def test_fair_share_counts_what_a_user_already_runs() -> None:
    limits = Limits(user_in_flight_here=Counter({1: 4}))
    picks = choose(items("u1", 10, user=1) + items("u2", 10, user=2, order=1), 4, limits)
    assert ids(picks) == ["u2-0", "u2-1", "u2-2", "u2-3"]


def test_a_retry_goes_ahead_of_fresh_work_of_its_class_only() -> None:
    retry = [Candidate("r", "old", 2, "normal", 7, retry=True, job_order=0)]
    cands = items("fresh", 5, user=1, order=1) + retry + items("urgent", 1, user=1, priority="high", order=2)
    assert ids(choose(cands, 3, Limits(user_in_flight_here=Counter({2: 9})))) == ["urgent-0", "r", "fresh-0"]


def test_window_items_keep_their_place_among_equals() -> None:
    cands = items("a", 1, user=1, order=2, in_window=True) + items("b", 1, user=2, order=1)
    assert ids(choose(cands, 1, Limits())) == ["a-0"]


def test_per_job_limit() -> None:
    limits = Limits(job_max={"a": 2}, job_in_flight=Counter({"a": 1}))
    assert ids(choose(items("a", 5) + items("b", 5, order=1), 4, limits)) == ["b-0", "a-0", "b-1", "b-2"]


def test_per_user_limits_over_all_queues_and_on_this_queue() -> None:
    cands = items("u1", 5, user=1) + items("u2", 5, user=2, order=1)
    everywhere = Limits(user_max=3, user_in_flight=Counter({1: 3, 2: 1}))
    assert ids(choose(cands, 5, everywhere)) == ["u2-0", "u2-1"]
    here = Limits(user_max_here=1)
    assert ids(choose(cands, 5, here)) == ["u1-0", "u2-0"]


def test_spending_budget_stops_costly_items_only() -> None:
    cands = items("runway", 5, cost=0.25) + items("free", 2, user=2, order=1)
    picks = choose(cands, 7, Limits(budget=0.6))
    assert sorted(ids(picks)) == ["free-0", "free-1", "runway-0", "runway-1"]


def test_no_slots_no_picks() -> None:
    assert choose(items("a", 3), 0, Limits()) == []


def test_ties_go_to_whoever_waited_longest() -> None:
    # Same items in flight: the user (then the job) served least recently goes first, not the
    # older job -- otherwise the older job would win every tie and take two thirds of a worker.
    cands = items("old", 5, user=1, order=1) + items("new", 5, user=2, order=2)
    limits = Limits(served={"u:1": 20.0, "j:old": 20.0, "u:2": 10.0, "j:new": 10.0})
    assert ids(choose(cands, 2, limits)) == ["new-0", "old-0"]
    mine = items("a", 5, user=1, order=1) + items("b", 5, user=1, order=2)
    assert ids(choose(mine, 1, Limits(served={"j:a": 5.0, "j:b": 1.0})))[0] == "b-0"


def test_work_that_started_before_it_could_be_taken_back_counts_against_the_limits() -> None:
    # One item of "capped" runs; two more wait in the window; "other" just arrived. The user may
    # have 3 in flight on this queue: the picks take one window item back to make room for "other".
    window = items("capped", 3, in_window=True)[1:]
    fresh = items("other", 3, order=1)
    limits = Limits(
        user_max_here=3, user_in_flight_here=Counter({1: 1}), job_in_flight=Counter({"capped": 1})
    )
    picks = choose(window + fresh, 5, limits)
    assert ids(picks) == ["other-0", "capped-1"]
    # But a worker started capped-2 before it could be taken back: both window items stay in
    # flight, and nothing new fits any more.
    stayed = window
    assert choose(fresh, 5 - len(stayed), limits.with_in_flight(stayed)) == []
    # Had only capped-2 stayed (capped-1 taken back), the other job would get the place left.
    assert ids(choose(fresh, 4, limits.with_in_flight(window[1:]))) == ["other-0"]
    # The counting is on a copy: the fill's own limits are unchanged.
    assert limits.user_in_flight_here[1] == 1 and limits.job_in_flight["capped"] == 1


def test_a_recovered_item_goes_before_the_earlier_items_of_its_own_job() -> None:
    # Item 7 lost its worker and goes back for attempt 2: it runs before the job's fresh items 0-2.
    cands = items("j", 3) + [Candidate("j-7", "j", 1, "normal", 7, retry=True)]
    assert ids(choose(cands, 2, Limits())) == ["j-7", "j-0"]


def test_a_recovered_item_of_a_low_priority_job_still_waits_for_normal_work() -> None:
    retry = [Candidate("r", "low", 1, "low", 0, retry=True, job_order=0)]
    assert ids(choose(retry + items("n", 2, order=1), 3, Limits())) == ["n-0", "n-1", "r"]


def test_a_small_job_is_not_stuck_behind_a_big_one_of_another_user() -> None:
    big = items("big", 1000, user=1, order=1)
    small = items("small", 2, user=2, order=2)
    assert ids(choose(big + small, 4, Limits())) == ["big-0", "small-0", "big-1", "small-1"]


def test_fair_share_is_per_user_not_per_job() -> None:
    # User 1 submitted three jobs, user 2 one: over many picks each user gets half the worker.
    cands = [c for j in ("a", "b", "c") for c in items(j, 50, user=1, order=ord(j))]
    cands += items("d", 50, user=2, order=100)
    picks = choose(cands, 30, Limits())
    assert Counter(c.user for c in picks) == {1: 15, 2: 15}
    assert Counter(c.job_id for c in picks if c.user == 1) == {"a": 5, "b": 5, "c": 5}


def test_items_already_in_the_window_go_before_their_jobs_pending_items() -> None:
    # Item 3 was published before a retry changed the order; the window keeps it rather than churn.
    cands = items("j", 3) + [Candidate("j-3", "j", 1, "normal", 3, in_window=True)]
    assert ids(choose(cands, 2, Limits())) == ["j-3", "j-0"]


def test_picks_spend_the_budget_in_the_order_they_run() -> None:
    # The high priority item is picked first and takes the money; the normal one no longer fits.
    cands = items("n", 1, cost=0.5, order=1) + items("h", 1, priority="high", cost=0.5, order=2)
    assert ids(choose(cands, 2, Limits(budget=0.6))) == ["h-0"]


def test_what_stayed_in_flight_spends_the_budget_too() -> None:
    stayed = items("w", 2, cost=0.25, in_window=True)
    limits = Limits(budget=0.6).with_in_flight(stayed)
    assert ids(choose(items("x", 3, cost=0.25, order=1), 3, limits)) == []
    assert ids(choose(items("x", 3, cost=0.1, order=1), 3, limits)) == ["x-0"]
