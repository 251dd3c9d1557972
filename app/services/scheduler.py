"""The scheduler: Postgres is the queue of record, the broker holds a small window per queue.

Items stay `pending` in Postgres until they enter their queue's window. A queue has about as many
items in flight (running, or queued in the broker) as its workers can hold: the item slots they
announce (running batch plus prefetch), times WINDOW_FACTOR, within WINDOW_MIN..WINDOW_MAX. The
window is what of that is not running yet. `fill(queue)` tops it up in the
order `app/services/order.py` decides, and takes queued-but-not-started items back out when
something ranked higher is waiting (a higher priority, a retry), when their job or queue is
paused, or when a limit was lowered. It runs after every batch of reports the applier commits (a
worker that finished an item gets its next one without waiting for a timer), every second from
beat, and after each submit, resume, retry and change of priority.

One fill per queue at a time (a Postgres advisory lock held by the fill's transaction): two
control processes fill different queues side by side, and never publish one slot twice. Work per
fill grows with the window and the number of jobs waiting, not with the backlog.

Taking an item back is fenced twice: in Redis (its dispatch token is voided unless its lease is
already taken, in one Lua call) and in Postgres (queued -> pending only on the same attempt). A
worker that later gets the voided message drops it unstarted.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text, update

from app.broker import coordination, item_payload, publish_items
from app.config import QUEUES, settings
from app.db import db
from app.models import PRIORITIES, Item, Job, QueueState, utcnow
from app.provider_registry import billed_providers
from app.services import order, policy
from app.services.items import add_event, lock_items, mark_queued, settle_job

log = logging.getLogger(__name__)

ITEM_QUEUES = tuple(q for q in QUEUES if q != "control")
# How long a place in the window takes to refill (report -> applier -> fill -> publish -> worker),
# and over how long the queue's finishing rate is taken.
REFILL_S = 0.6
RATE_WINDOW_S = 3.0


@dataclass
class Filled:
    """What one fill did."""

    queue: str
    target: int = 0  # items in flight wanted (queued or running)
    published: int = 0
    recalled: int = 0
    broker_reachable: bool = True
    waiting_jobs: list[str] = field(default_factory=list)


def window_sizes() -> dict[str, int]:
    """Queue -> items it should have in flight now (running, or queued in the broker)."""
    s = settings()
    try:
        slots = coordination().consumer_slots(max_age_s=max(10.0, 3 * s.heartbeat_s))
    except Exception as exc:  # noqa: BLE001 - broker away: nothing can be published anyway
        log.debug("cannot read the workers' slots: %s", exc)
        slots = {}
    return {
        q: max(s.window_min, min(s.window_max, int(round(slots.get(q, 0) * s.window_factor))))
        for q in ITEM_QUEUES
    }


def pending_by_queue() -> dict[str, int]:
    """Items waiting in Postgres for a place in each queue's window."""
    rows = db.session.execute(
        select(Item.queue, func.count()).where(Item.status == "pending").group_by(Item.queue)
    )
    return {queue: int(n) for queue, n in rows}


def paused_queues() -> set[str]:
    return set(db.session.scalars(select(QueueState.queue).where(QueueState.paused_at.is_not(None))))


def fill_all(queues: tuple[str, ...] | list[str] | set[str] | None = None) -> list[Filled]:
    """Fill each item queue's window (or the given ones). Commits. Never raises for a broker or
    database hiccup: the control worker's window filler fills again within a second."""
    chosen = sorted(set(queues or ITEM_QUEUES) & set(ITEM_QUEUES))
    try:
        coordination().r.ping()
    except Exception as exc:  # noqa: BLE001 - nothing can be published or taken back: wait for it
        log.warning("broker unreachable, windows not filled: %s", exc)
        return [Filled(queue, broker_reachable=False) for queue in chosen]
    sizes = window_sizes()
    done = []
    for queue in chosen:
        try:
            done.append(fill(queue, sizes[queue]))
        except Exception as exc:  # noqa: BLE001 - logged; the next fill picks up from Postgres
            db.session.rollback()
            log.warning("could not fill the %s window: %s", queue, exc)
            done.append(Filled(queue, broker_reachable=False))
    return done


def _held(cands: list[order.Candidate], attempts: dict[str, int]) -> set[str]:
    """Which of these window items a worker has prefetched (its hold in Redis)."""
    try:
        return coordination().held([(c.item_id, attempts[c.item_id]) for c in cands])
    except Exception as exc:  # noqa: BLE001 - broker away: take back in rank order
        log.debug("cannot read holds: %s", exc)
        return set()


def _finish_rate(queue: str) -> float:
    """Items of `queue` finished per second over the last RATE_WINDOW_S (recent rows only)."""
    since = utcnow() - timedelta(seconds=RATE_WINDOW_S)
    done = db.session.scalar(
        select(func.count())
        .select_from(Item)
        .where(Item.status.in_(("succeeded", "failed")), Item.updated_at >= since, Item.queue == queue)
    )
    return float(done or 0) / RATE_WINDOW_S


def _lock(queue: str) -> None:
    """One fill per queue at a time, until this transaction ends (Postgres; SQLite has one writer)."""
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"bulkgen:window:{queue}"}
        )


def hold_windows() -> None:
    """Wait for any fill in progress and keep new ones out until this transaction ends: a writer
    that must know which pending items were never published (cancel) takes this before any row."""
    for queue in ITEM_QUEUES:
        _lock(queue)


@dataclass
class _JobInfo:
    id: str
    user: int | None
    priority: str
    paused: bool
    max_concurrency: int | None
    order: float
    in_flight: int
    provider: str
    model: str
    params: dict[str, Any]
    waiting_reason: str | None
    cancelled: bool


def _jobs(ids: set[str]) -> dict[str, _JobInfo]:
    found: dict[str, _JobInfo] = {}
    ordered = sorted(ids)
    for start in range(0, len(ordered), 500):
        rows = db.session.execute(
            select(
                Job.id,
                Job.created_by,
                Job.priority,
                Job.paused_at,
                Job.max_concurrency,
                Job.created_at,
                Job.n_queued,
                Job.n_running,
                Job.provider,
                Job.model,
                Job.params,
                Job.waiting_reason,
                Job.cancelled_at,
            ).where(Job.id.in_(ordered[start : start + 500]))
        )
        for r in rows:
            found[r.id] = _JobInfo(
                id=r.id,
                user=r.created_by,
                priority=r.priority,
                paused=r.paused_at is not None,
                max_concurrency=r.max_concurrency,
                order=r.created_at.timestamp() if isinstance(r.created_at, datetime) else 0.0,
                in_flight=r.n_queued + r.n_running,
                provider=r.provider,
                model=r.model,
                params=r.params or {},
                waiting_reason=r.waiting_reason,
                cancelled=r.cancelled_at is not None,
            )
    return found


def _user_in_flight() -> Counter:
    """Items queued or running per user over all queues (only asked when a per-user cap is set)."""
    rows = db.session.execute(
        select(Job.created_by, func.sum(Job.n_queued + Job.n_running))
        .where(Job.status.in_(("queued", "running", "paused")))
        .group_by(Job.created_by)
    )
    return Counter({user: int(n or 0) for user, n in rows})


def fill(queue: str, size: int | None = None) -> Filled:
    """Top up `queue`'s window and take back what should not be in it. Commits."""
    s = settings()
    size = window_sizes()[queue] if size is None else size
    result = Filled(queue, target=size)
    _lock(queue)
    window = list(
        db.session.execute(
            select(Item.id, Item.job_id, Item.attempt, Item.idx, Item.params)
            .where(Item.queue == queue, Item.status == "queued")
            .limit(s.window_max * 4)
        )
    )
    waiting_job_ids = set(db.session.scalars(select(Job.id).where(Job.n_pending > 0)))
    if not window and not waiting_job_ids:
        db.session.commit()  # nothing in the window, nothing waiting: an idle queue costs two reads
        return result
    # Fast items: the workers' slots alone would idle them while a finished item's report travels
    # to the applier and the next message back (a few hundred ms). Little's law: keep what the
    # queue finishes in that time in flight on top.
    size = min(s.window_max, size + int(_finish_rate(queue) * REFILL_S))
    result.target = size
    queue_state = db.session.get(QueueState, queue)
    queue_paused = queue_state is not None and queue_state.paused_at is not None
    running = dict(
        db.session.execute(
            select(Item.job_id, func.count())
            .where(Item.queue == queue, Item.status == "running")
            .group_by(Item.job_id)
        ).all()
    )
    # Items a worker has started whose `running` report is not applied yet: they are running.
    try:
        started = {i for i, held in coordination().leases_present([w.id for w in window]).items() if held}
    except Exception as exc:  # noqa: BLE001 - broker away: nothing can be published or taken back
        log.debug("cannot read leases: %s", exc)
        started = set()
    for w in window:
        if w.id in started:
            running[w.job_id] = running.get(w.job_id, 0) + 1
    window = [w for w in window if w.id not in started]
    jobs = _jobs(waiting_job_ids | {w.job_id for w in window} | set(running))

    def candidate(
        item_id: str, job: _JobInfo, idx: int, attempt: int, in_window: bool, own: dict[str, Any] | None
    ) -> order.Candidate:
        # An item's own parameters (a longer video for one photo) change what it costs.
        params = {**job.params, **own} if own else job.params
        cost = policy.item_cost(job.provider, job.model, params)
        return order.Candidate(
            item_id=item_id,
            job_id=job.id,
            user=job.user,
            priority=job.priority,
            idx=idx,
            retry=attempt > 1,
            job_order=job.order,
            in_window=in_window,
            cost=cost,
        )

    def eligible(job: _JobInfo) -> bool:
        return not queue_paused and not job.paused and not job.cancelled

    window_cands = {w.id: candidate(w.id, jobs[w.job_id], w.idx, w.attempt, True, w.params) for w in window}
    attempts = {w.id: w.attempt for w in window}
    cands = [c for c in window_cands.values() if eligible(jobs[c.job_id])]

    if not queue_paused:
        open_jobs = [j for j in jobs.values() if j.id in waiting_job_ids and eligible(j)]
        # Retries of this queue first (few), then the head of each waiting job.
        heads = list(
            db.session.execute(
                select(Item.id, Item.job_id, Item.idx, Item.attempt, Item.params)
                .where(Item.queue == queue, Item.status == "pending", Item.attempt > 1)
                .order_by(Item.idx)
                .limit(size)
            )
        )
        for job in open_jobs:
            heads.extend(
                db.session.execute(
                    select(Item.id, Item.job_id, Item.idx, Item.attempt, Item.params)
                    .where(Item.job_id == job.id, Item.queue == queue, Item.status == "pending")
                    .order_by(Item.idx)
                    .limit(size)
                )
            )
        seen: set[str] = set()
        for h in heads:
            job = jobs.get(h.job_id)
            if h.id in seen or job is None or not eligible(job):
                continue
            seen.add(h.id)
            attempts[h.id] = h.attempt
            cands.append(candidate(h.id, job, h.idx, h.attempt, False, h.params))

    limits = _limits(queue, jobs, running, window_cands)
    try:
        limits.served = coordination().served(queue)
    except Exception as exc:  # noqa: BLE001 - broker away: ties go to the older job
        log.debug("cannot read who was served last: %s", exc)
    slots = max(0, size - sum(running.values()))
    picks = order.choose(cands, slots, limits)
    picked = {c.item_id for c in picks}
    new = [c for c in picks if not c.in_window]

    # What comes back out of the window: items of paused (or cancelled) jobs, or of a paused queue;
    # items a lowered limit no longer admits (there was room, yet they were not picked); and, when
    # waiting items of a better class (priority, retry) are picked, every item of a worse class a
    # worker has prefetched (it would run them first), then as many more as places are needed --
    # the broker's priority lists put the better ones ahead of what still waits in Redis.
    out = [
        c
        for c in window_cands.values()
        if c.item_id not in picked and (not eligible(jobs[c.job_id]) or len(picks) < slots)
    ]
    best = min((c.cls for c in new), default=None)
    worse = [c for c in window_cands.values() if c not in out and best is not None and best < c.cls]
    if worse:
        held = _held(worse, attempts)
        out.extend(c for c in worse if c.item_id in held)
        need = len(new) - (slots - (len(window) - len(out)))
        rest = sorted(
            (c for c in worse if c.item_id not in held), key=lambda c: ([-x for x in c.cls], -c.idx)
        )
        out.extend(rest[: max(0, need)])
    recalled: list[str] = []
    if out:
        try:
            recalled = coordination().take_back([(c.item_id, attempts[c.item_id]) for c in out])
        except Exception as exc:  # noqa: BLE001 - broker away: nothing comes back out now
            log.warning("could not take items back out of the %s window: %s", queue, exc)
            result.broker_reachable = False
        _back_to_pending(recalled, attempts, {c.item_id: c.job_id for c in out}, queue_paused, jobs)
        result.recalled = len(recalled)

    stayed = [c for c in window_cands.values() if c.item_id not in recalled]
    if len(recalled) < len(out):
        # Some of what was to come back out started first (a worker took its lease): it runs now,
        # and the picks made in its place could take a user or job past its limit. Choose the new
        # work again, with everything still in the window counted in flight.
        log.info("%s: %d items started before they could be taken back", queue, len(out) - len(recalled))
        new = order.choose(
            [c for c in cands if not c.in_window], slots - len(stayed), limits.with_in_flight(stayed)
        )
    room = slots - len(stayed)
    to_publish = new[: max(0, room)]
    if limits.budget is not None:
        result.waiting_jobs = _budget_waits(cands, picks, limits.budget, jobs)
    if to_publish and result.broker_reachable:
        published = _publish(queue, to_publish, attempts, limits.served)
        result.published = published
        if published < len(to_publish):
            result.broker_reachable = False
    db.session.commit()
    return result


def _limits(
    queue: str, jobs: dict[str, _JobInfo], running: dict[str, int], window: dict[str, order.Candidate]
) -> order.Limits:
    """What is in flight besides the candidates (the window's items are candidates themselves)."""
    s = settings()
    limits = order.Limits(
        user_max=s.user_max_in_flight,
        user_max_here=s.user_max_in_flight_per_queue.get(queue),
        job_max={j.id: j.max_concurrency for j in jobs.values()},
    )
    in_window = Counter(c.job_id for c in window.values())
    for job in jobs.values():
        limits.job_in_flight[job.id] = max(0, job.in_flight - in_window[job.id])
    for job_id, n in running.items():
        if job_id in jobs:
            limits.user_in_flight_here[jobs[job_id].user] += n
    if s.user_max_in_flight is not None:
        limits.user_in_flight = _user_in_flight()
        for c in window.values():
            limits.user_in_flight[c.user] -= 1
    billed = set(billed_providers())
    if any(j.provider in billed for j in jobs.values()) and s.daily_spend_cap_usd is not None:
        # Today's spend counts the window's estimates; they are candidates again here.
        limits.budget = s.daily_spend_cap_usd - policy.spent_today() + sum(c.cost for c in window.values())
    return limits


def _budget_waits(
    cands: list[order.Candidate], picks: list[order.Candidate], budget: float, jobs: dict[str, _JobInfo]
) -> list[str]:
    """Record on each job of a billed provider whether the spending cap holds its items back (an
    event when that changes)."""
    left = budget - sum(c.cost for c in picks)
    picked = {c.item_id for c in picks}
    picked_jobs = {c.job_id for c in picks}
    # Waiting on money: some item of the job was not picked and would not fit in what is left.
    waiting = sorted({c.job_id for c in cands if c.item_id not in picked and c.cost > left + 1e-9})
    cap = settings().daily_spend_cap_usd
    billed = set(billed_providers())
    reason = (
        f"daily spending cap of ${cap:.2f} reached; "
        "items wait and start after midnight UTC or when the cap is raised"
    )
    for job in jobs.values():
        if job.provider not in billed:
            continue
        want = reason if job.id in waiting else None
        if job.id not in waiting and job.id not in picked_jobs:
            continue  # nothing to say about a job that neither waits on money nor ran
        if want != job.waiting_reason:
            db.session.execute(
                update(Job).where(Job.id == job.id).values(waiting_reason=want),
                execution_options={"synchronize_session": False},
            )
            add_event(
                job.id,
                "job.waiting" if want else "job.resumed",
                detail=want or "spending cap allows work again",
            )
    return waiting


def _back_to_pending(
    ids: list[str],
    attempts: dict[str, int],
    job_of: dict[str, str],
    queue_paused: bool,
    jobs: dict[str, _JobInfo],
) -> None:
    """queued -> pending for items taken back out of the window (fenced on their attempt)."""
    if not ids:
        return
    now = utcnow()
    by_job: dict[str, list[str]] = defaultdict(list)
    lock_items(Item.id.in_(sorted(ids)), Item.status == "queued")
    for item_id in sorted(ids):
        moved = db.session.execute(
            update(Item)
            .where(Item.id == item_id, Item.status == "queued", Item.attempt == attempts[item_id])
            .values(status="pending", queued_at=None, updated_at=now),
            execution_options={"synchronize_session": False},
        ).rowcount
        if moved:
            by_job[job_of[item_id]].append(item_id)
    for job_id, moved_ids in sorted(by_job.items()):
        job = jobs[job_id]
        why = (
            "its queue is paused"
            if queue_paused
            else "the job is paused"
            if job.paused
            else "the job was cancelled"
            if job.cancelled
            else "work ranked higher is waiting, or a limit was lowered"
        )
        add_event(
            job_id, "job.window", detail=f"{len(moved_ids)} queued items taken back out of the broker: {why}"
        )
        settle_job(job_id, {"queued": -len(moved_ids), "pending": len(moved_ids)})


def _publish(
    queue: str, picks: list[order.Candidate], attempts: dict[str, int], served: dict[str, float]
) -> int:
    """Publish the picked items in their order and mark them queued; returns how many made it."""
    rows = {
        item.id: item
        for item in db.session.scalars(select(Item).where(Item.id.in_([c.item_id for c in picks])))
    }
    # Loaded once per fill and held here (the session keeps only weak references).
    job_rows = {j.id: j for j in db.session.scalars(select(Job).where(Job.id.in_({c.job_id for c in picks})))}
    messages = []
    for c in picks:
        item = rows.get(c.item_id)
        if item is None or item.status != "pending" or item.attempt != attempts[c.item_id]:
            continue
        job_row = job_rows.get(c.job_id)
        if job_row is None:
            continue
        payload = item_payload(item, job_row, dispatch=secrets.token_hex(8))
        # Redis priority steps: 0 runs first; an item's further attempt goes a step ahead of its class.
        priority = max(0, PRIORITIES.get(c.priority, 3) - (1 if c.retry else 0))
        messages.append((payload, item.queue, priority))
    published = set(publish_items(messages))
    by_job: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for payload, _, _ in messages:
        if payload.item_id in published:
            by_job[payload.job_id].append((payload.item_id, payload.attempt))
    count = 0
    for job_id, entries in sorted(by_job.items()):
        count += mark_queued(job_id, entries)
    # Who was served, in the order of the picks: the next fill's tie-break.
    clock = max([time.time(), *served.values()])
    marks: dict[str, float] = {}
    for c in picks:
        if c.item_id in published:
            clock += 0.001
            marks.update(dict.fromkeys(order.served_keys(c), clock))
    try:
        coordination().mark_served(queue, marks)
    except Exception as exc:  # noqa: BLE001 - only a tie-break is lost
        log.debug("cannot record who was served: %s", exc)
    return count


# --- control: pause, resume, reprioritise, queue maintenance ---------------------------------


def pause_job(job: Job) -> bool:
    """No new item of the job enters the window; queued ones come back out; running ones finish."""
    if job.paused_at is not None or job.status in ("succeeded", "failed", "cancelled"):
        return False
    job.paused_at = utcnow()
    add_event(job.id, "job.paused", detail="paused: running items finish, no new item starts")
    settle_job(job.id)
    db.session.commit()
    fill_all()
    return True


def resume_job(job: Job) -> bool:
    if job.paused_at is None:
        return False
    job.paused_at = None
    add_event(job.id, "job.resumed", detail="resumed")
    settle_job(job.id)
    db.session.commit()
    fill_all()
    return True


def update_job(job: Job, changes: dict[str, Any]) -> list[str]:
    """Change a job's priority and/or max_concurrency (validated by the caller); returns what changed."""
    said = []
    if "priority" in changes and changes["priority"] != job.priority:
        said.append(f"priority {job.priority} -> {changes['priority']}")
        job.priority = changes["priority"]
    if "max_concurrency" in changes and changes["max_concurrency"] != job.max_concurrency:
        said.append(
            f"max_concurrency {job.max_concurrency or 'unlimited'} -> {changes['max_concurrency'] or 'unlimited'}"
        )
        job.max_concurrency = changes["max_concurrency"]
    if said:
        add_event(job.id, "job.updated", detail="; ".join(said))
        settle_job(job.id)
    db.session.commit()
    if said:
        fill_all()
    return said


def set_queue_paused(queue: str, paused: bool, user_id: int | None = None) -> bool:
    """Pause a queue for maintenance (its workers stay up, no new work reaches them) or resume it."""
    state = db.session.get(QueueState, queue)
    if state is None:
        state = QueueState(queue=queue)
        db.session.add(state)
    was = state.paused_at is not None
    state.paused_at = utcnow() if paused else None
    state.paused_by = user_id if paused else None
    state.updated_at = utcnow()
    db.session.commit()
    log.info("queue %s %s", queue, "paused" if paused else "resumed")
    fill_all([queue])
    return was != paused
