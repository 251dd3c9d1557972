"""Fairness: what the scheduler's order (app/services/order.py) means for the people waiting.

One item worker with one lane (`-c 1` on a GPU queue) runs echo items of ITEM_S = 0.5 s each, so
one "item-time" is ITEM_S and the queue runs about one item per item-time; the control worker
with its schedule keeps the broker's window small (WINDOW_MIN = 2 for one lane: the running item
and the one prefetched) and decides from Postgres what enters it. Times of the item's own life
(`started_at`, `finished_at`) are the worker's clock, on this same machine. Measured, on one
system run with LEASE_TTL_S=4, HEARTBEAT_S=1, RECONCILE_INTERVAL_S=1 (so recovery takes seconds):

1. small behind big: a 300-item job runs (normal priority); once 5 of its items succeeded the same
   user submits a 3-item job (normal as well). Round robin across a user's jobs should run the
   small job's items between the big job's, not after them: from the small job's submission to
   its last item's `finished_at`, in item-times (target <= 10), and how many of the big job's
   items had finished by then.
2. higher priority starts within one item-time: while that big job keeps running, a 1-item job
   with priority "high" is submitted (several times, one after the other). The high item takes an
   unstarted normal item's place in the window, so it waits only for the item running now: from
   its submission to its `started_at`, in item-times (target <= 1, the worst of the trials).
3. two users, 200 items each, submitted at the same instant: each user's share of the items that
   finished in a window in the middle of the run (from 10 s to 70 s after submission), target
   0.45..0.55 each. Both jobs are cancelled after the window.
4. a recovered item runs again soon: a 100-item job runs; the worker is killed (`kill -9` of its
   process group) while an item runs and started again at once (under a new name, so its log
   shows when it is ready). The item's lease expires (<= LEASE_TTL_S after the kill), the
   reconciler (every RECONCILE_INTERVAL_S) puts it back with attempt 2 (`item.retry`), and a
   retry ranks ahead of fresh work, so it should start before (almost) any fresh item: from the
   kill to attempt 2's `started_at`, target <= LEASE_TTL_S + RECONCILE_INTERVAL_S + ITEM_S. Also
   how many fresh items started between the `item.retry` event and attempt 2's start (the one
   the worker was running then at most, plus one in a race).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import Api, BenchSystem, Context, emit, main_for, note, png_bytes, system

BENCH = "fairness"
ITEM_S = 0.5
QUEUE = "wan_local"
ENV = {"LEASE_TTL_S": "4", "HEARTBEAT_S": "1", "RECONCILE_INTERVAL_S": "1"}
FINISHED = ("succeeded", "failed", "cancelled")


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--big", type=int, default=None, help="items of the big job (default 300; 60 with --quick)"
    )
    parser.add_argument(
        "--per-user", type=int, default=None, help="items per user (default 200; 50 with --quick)"
    )
    parser.add_argument(
        "--high-trials",
        type=int,
        default=None,
        help="high-priority submissions, one after the other (default 5; 3 with --quick)",
    )


def epoch(iso: str | None) -> float | None:
    return datetime.fromisoformat(iso).timestamp() if iso else None


def submit(api: Api, keys: list[str], n: int, **fields: Any) -> tuple[dict[str, Any], float]:
    """A job of n echo items; returns it and when the submit request was sent."""
    inputs = [keys[i % len(keys)] for i in range(n)]
    sent = time.time()
    job = api.submit(inputs, params={"queue": QUEUE, "delay_s": ITEM_S}, **fields)
    return job, sent


def wait_counts(api: Api, job_id: str, key: str, at_least: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = api.job(job_id)
        if job["counts"].get(key, 0) >= at_least:
            return job
        time.sleep(0.1)
    raise TimeoutError(f"job {job_id}: fewer than {at_least} {key} after {timeout} s: {job.get('counts')}")


def cancel(api: Api, *job_ids: str) -> None:
    """Cancel the jobs, wait until they are settled, and give the worker a moment to drop the
    cancelled messages still in the broker, so the next scenario starts from an idle queue."""
    for job_id in job_ids:
        api.post(f"/api/v1/jobs/{job_id}/cancel").raise_for_status()
    for job_id in job_ids:
        api.wait(job_id, timeout=60, every=0.2)
    time.sleep(4 * ITEM_S)


def events(api: Api, job_id: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after = 0
    while True:
        r = api.get(f"/api/v1/jobs/{job_id}/events", params={"after": after, "limit": 1000})
        r.raise_for_status()
        page = r.json()["events"]
        out += page
        if len(page) < 1000:
            return out
        after = page[-1]["id"]


def small_behind_big(s: BenchSystem, keys: list[str], big_n: int, trials: int, common: dict) -> None:
    """Scenarios 1 and 2, on one running big job."""
    big, _ = submit(s.api, keys, big_n)
    note(f"big job: {big_n} items of {ITEM_S} s; waiting for 5 to succeed")
    wait_counts(s.api, big["id"], "succeeded", 5, timeout=120)
    small, sent = submit(s.api, keys, 3)
    done = s.api.wait(small["id"], timeout=big_n * ITEM_S * 3 + 60, every=0.1)
    if done["status"] != "succeeded":
        raise RuntimeError(f"small job ended {done['status']}: {done['counts']}")
    small_items = s.api.items(small["id"])
    finish = max(epoch(i["finished_at"]) or 0.0 for i in small_items)
    waited = (finish - sent) / ITEM_S
    big_items = s.api.items(big["id"])
    big_done = sum(
        1
        for i in big_items
        if i["status"] == "succeeded" and (epoch(i["finished_at"]) or float("inf")) <= finish
    )
    note(f"small job done after {waited:.1f} item-times; big job had {big_done} of {big_n} done")
    emit(
        BENCH,
        "small_job_behind_big_item_times",
        waited,
        "item-times",
        target="<= 10",
        met=waited <= 10,
        seconds=round(finish - sent, 3),
        small_items=3,
        **common,
    )
    emit(
        BENCH,
        "big_job_items_done_when_small_finished",
        big_done,
        "items",
        target=f"< {big_n} (small job did not wait for the big one)",
        met=big_done < big_n,
        big_items=big_n,
        small_starts=sorted(
            round(((epoch(i["started_at"]) or finish) - sent) / ITEM_S, 2) for i in small_items
        ),
        **common,
    )

    # 2. A high-priority item while the big job runs: several trials, the worst one counts.
    samples: list[float] = []
    for trial in range(trials):
        time.sleep(3 * ITEM_S)  # the window holds the big job's items only again
        if s.api.job(big["id"])["status"] in FINISHED:
            raise RuntimeError("the big job finished before the high-priority trials did; use a bigger --big")
        high, sent = submit(s.api, keys, 1, priority="high")
        done = s.api.wait(high["id"], timeout=120, every=0.1)
        item = s.api.items(high["id"])[0]
        started = epoch(item["started_at"])
        if done["status"] != "succeeded" or started is None:
            raise RuntimeError(f"high-priority job ended {done['status']}: {item}")
        samples.append((started - sent) / ITEM_S)
        note(f"high-priority trial {trial + 1}: started after {samples[-1]:.2f} item-times")
    worst = max(samples)
    emit(
        BENCH,
        "high_priority_start_item_times",
        worst,
        "item-times",
        target="<= 1 (worst trial)",
        met=worst <= 1,
        trials=[round(x, 3) for x in samples],
        **common,
    )
    cancel(s.api, big["id"])


def two_users(s: BenchSystem, keys: list[str], per_user: int, quick: bool, common: dict) -> None:
    """Scenario 3: two users submit at the same instant; their shares of a window of the run."""
    s.stack.flask("create-user", "b@example.com", "--password", "pw-123456789")
    token = s.stack.flask("create-token", "b@example.com").stdout.strip().splitlines()[-1].strip()
    users = {"a": s.api, "b": Api(s.api.base, token)}
    lead, span = (3.0, 20.0) if quick else (10.0, 60.0)
    jobs: dict[str, dict[str, Any]] = {}
    sent: dict[str, float] = {}
    barrier = threading.Barrier(len(users))
    errors: list[BaseException] = []

    def go(name: str) -> None:
        try:
            barrier.wait()
            jobs[name], sent[name] = submit(users[name], keys, per_user)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(name,)) for name in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    t0 = min(sent.values())
    window = (t0 + lead, t0 + lead + span)
    note(
        f"two users, {per_user} items each, submitted {abs(sent['a'] - sent['b']) * 1000:.0f} ms apart; "
        f"counting items finished {lead:g}..{lead + span:g} s after"
    )
    time.sleep(max(0.0, window[1] + 1.0 - time.time()))
    finished: dict[str, list[float]] = {}
    for name, api in users.items():
        finished[name] = [
            at
            for i in api.items(jobs[name]["id"])
            if i["status"] == "succeeded" and (at := epoch(i["finished_at"])) is not None
        ]
    cancel(s.api, *(job["id"] for job in jobs.values()))
    counts = {name: sum(1 for at in ats if window[0] <= at < window[1]) for name, ats in finished.items()}
    total = sum(counts.values())
    # Longest run of one user's items in finishing order inside the window: 1 or 2 when they alternate.
    merged = sorted((at, name) for name, ats in finished.items() for at in ats if window[0] <= at < window[1])
    streak = longest = 0
    last = None
    for _, name in merged:
        streak = streak + 1 if name == last else 1
        last = name
        longest = max(longest, streak)
    for name in users:
        share = counts[name] / total if total else 0.0
        emit(
            BENCH,
            f"user_{name}_share",
            share,
            "share",
            target="0.45..0.55",
            met=0.45 <= share <= 0.55,
            items_in_window=counts[name],
            all_items_in_window=total,
            window_s=[lead, lead + span],
            longest_same_user_run=longest,
            per_user=per_user,
            **common,
        )


def recovered_item(s: BenchSystem, keys: list[str], n: int, common: dict) -> None:
    """Scenario 4: kill -9 of the only worker mid-item and start it again at once.

    The bound LEASE_TTL_S + RECONCILE_INTERVAL_S + ITEM_S assumes a worker is there to take the
    item when it is put back. Here the only worker was killed and is started again right after
    the kill, so when its start takes longer than the lease needs to expire, the put-back item
    waits for the worker, not for the scheduler. Only that part is taken off: the time from the
    `item.retry` event to the worker being ready, when positive. (Taking off the whole restart
    time would also take off the part that overlapped the lease wait, which the item spends
    anyway: that would flatter the figure.) The raw time is shown beside it.
    """
    ttl = float(ENV["LEASE_TTL_S"])
    interval = float(ENV["RECONCILE_INTERVAL_S"])
    job, _ = submit(s.api, keys, n)
    wait_counts(s.api, job["id"], "succeeded", 3, timeout=60)  # steady state: leases renewed
    victim_proc = QUEUE
    note(f"kill -9 of worker {victim_proc} mid-item (lease TTL {ttl:g} s, reconcile every {interval:g} s)")
    s.stack.procs[victim_proc].signal(signal.SIGKILL)
    killed_at = time.time()
    s.stack.stop(victim_proc)  # reap it and forget it: a restart under the same name would find the
    # old log's "ready." line, so the new process gets a name (and log) of its own.
    restart_at = time.time()
    s.start_worker(QUEUE, name=f"{QUEUE}_restarted", concurrency=1)
    online_at = time.time()
    note(f"worker restarted and ready {online_at - restart_at:.1f} s after the restart call")
    deadline = time.monotonic() + ttl + 120
    again: dict[str, Any] | None = None
    items: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        items = s.api.job(job["id"], items_limit=n)["items"]
        retried = [i for i in items if i["attempt"] >= 2]
        if retried and retried[0]["started_at"] and retried[0]["status"] in ("running", "succeeded"):
            again = retried[0]
            break
        time.sleep(0.2)
    if again is None:
        retried = [(i["id"], i["status"], i["attempt"]) for i in items if i["attempt"] >= 2]
        raise TimeoutError(f"no item ran a second attempt (killed between items?): {retried}")
    started2 = epoch(again["started_at"]) or 0.0
    retry_events = [
        e for e in events(s.api, job["id"]) if e["kind"] == "item.retry" and e["item_id"] == again["id"]
    ]
    retry_at = epoch(retry_events[0]["at"]) if retry_events else None
    fresh_between = (
        sum(
            1
            for i in items
            if i["id"] != again["id"]
            and i["attempt"] == 1
            and (at := epoch(i["started_at"])) is not None
            and retry_at <= at < started2
        )
        if retry_at is not None
        else None
    )
    cancel(s.api, job["id"])
    raw = started2 - killed_at
    restart_s = online_at - restart_at
    waited_for_worker = max(0.0, online_at - retry_at) if retry_at is not None else 0.0
    recovery = raw - waited_for_worker
    bound = ttl + interval + ITEM_S
    extra = {
        "raw_s": round(raw, 3),
        "retry_event_after_kill_s": round(retry_at - killed_at, 3) if retry_at is not None else None,
        "worker_ready_after_kill_s": round(online_at - killed_at, 3),
        "waited_for_worker_s": round(waited_for_worker, 3),
        **common,
    }
    emit(
        BENCH,
        "kill9_to_attempt2_start_s",
        recovery,
        "s",
        target=f"<= lease + reconcile + item = {bound:g}",
        met=recovery <= bound,
        **extra,
    )
    emit(BENCH, "worker_restart_s", restart_s, "s", **common)
    emit(
        BENCH,
        "fresh_items_started_before_retry",
        fresh_between,
        "items",
        target="<= 2",
        met=fresh_between is not None and fresh_between <= 2,
        retry_wait_s=round(started2 - retry_at, 3) if retry_at is not None else None,
        **common,
    )


def run(ctx: Context, args: argparse.Namespace) -> None:
    big_n = args.big or (60 if ctx.quick else 300)
    per_user = args.per_user or (50 if ctx.quick else 200)
    trials = args.high_trials or (3 if ctx.quick else 5)
    recovery_n = 40 if ctx.quick else 100
    common = {
        "item_s": ITEM_S,
        "lease_ttl_s": float(ENV["LEASE_TTL_S"]),
        "heartbeat_s": float(ENV["HEARTBEAT_S"]),
        "reconcile_interval_s": float(ENV["RECONCILE_INTERVAL_S"]),
    }
    note(f"settings: {', '.join(f'{k}={v}' for k, v in ENV.items())}; one worker, one lane; item {ITEM_S} s")
    with system(ctx, "fairness", workers=("control",), env=ENV, use_postgres=ctx.pg is not None) as s:
        s.start_worker(QUEUE, concurrency=1)
        keys = s.api.upload([png_bytes(i) for i in range(20)])
        s.api.wait(submit(s.api, keys, 2)[0]["id"], 120)  # warm: the lane and the window are up
        small_behind_big(s, keys, big_n, trials, common)
        two_users(s, keys, per_user, ctx.quick, common)
        recovered_item(s, keys, recovery_n, common)
        note(f"logs: {Path(s.stack.log_dir)}")


def main(argv: list[str] | None = None) -> int:
    return main_for(BENCH, add_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
