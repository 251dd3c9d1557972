"""What runs next on a queue: one pure function over rows, no database, no broker.

The order, as the team asked for it:
1. priority class (high, normal, low);
2. inside a class, an item going back for another attempt (lease lost, retryable failure, manual
   retry) before fresh work;
3. fair share across users: the user with the fewest items in flight goes first, and of users
   with as many, the one served least recently;
4. round robin across that user's jobs: the job with the fewest items in flight goes first, and
   of jobs with as many, the one served least recently (then the older job);
5. item order inside a job.

Limits (per user over all queues, per user on this queue, per job, and a spending budget) skip a
candidate without stopping the others. Picking one item counts it in flight at once, so a batch of
picks interleaves users and jobs the way finishing items would.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

# Lower runs first.
PRIORITY_RANK = {"high": 0, "normal": 1, "low": 2}


@dataclass(frozen=True)
class Candidate:
    """An item that could enter the broker's window (or is in it and not started yet)."""

    item_id: str
    job_id: str
    user: int | None
    priority: str
    idx: int
    # A further attempt of an item that ran before (attempt > 1).
    retry: bool = False
    # Where the job stands among jobs: its creation order (older first at equal share).
    job_order: float = 0.0
    # Already published (queued, not started): kept ahead of equal-ranked pending work, so the
    # window does not churn.
    in_window: bool = False
    cost: float = 0.0

    @property
    def cls(self) -> tuple[int, int]:
        """Priority class, with retries half a class ahead: what may displace a window item."""
        return (PRIORITY_RANK.get(self.priority, 1), 0 if self.retry else 1)


@dataclass
class Limits:
    """In flight now (queued or running, not counting the candidates) and the caps."""

    user_in_flight: Counter = field(default_factory=Counter)  # over all queues
    user_in_flight_here: Counter = field(default_factory=Counter)  # on this queue
    job_in_flight: Counter = field(default_factory=Counter)
    user_max: int | None = None
    user_max_here: int | None = None
    job_max: dict[str, int | None] = field(default_factory=dict)
    # Money left to spend (the daily spending cap of billed providers); None: no budget.
    budget: float | None = None
    # When each user ("u:ID") and job ("j:ID") last had an item picked on this queue: breaks ties
    # in favour of whoever waited longest (without it the older job would win every tie).
    served: dict[str, float] = field(default_factory=dict)

    def with_in_flight(self, started: Iterable[Candidate]) -> Limits:
        """These limits with `started` counted in flight (they are no longer candidates)."""
        limits = replace(
            self,
            user_in_flight=Counter(self.user_in_flight),
            user_in_flight_here=Counter(self.user_in_flight_here),
            job_in_flight=Counter(self.job_in_flight),
        )
        for c in started:
            limits.user_in_flight[c.user] += 1
            limits.user_in_flight_here[c.user] += 1
            limits.job_in_flight[c.job_id] += 1
            if limits.budget is not None:
                limits.budget -= c.cost
        return limits


def served_keys(c: Candidate) -> tuple[str, str]:
    return f"u:{c.user}", f"j:{c.job_id}"


def choose(candidates: Iterable[Candidate], slots: int, limits: Limits) -> list[Candidate]:
    """Up to `slots` candidates in the order they should run."""
    by_job: dict[str, list[Candidate]] = {}
    for c in candidates:
        by_job.setdefault(c.job_id, []).append(c)
    for items in by_job.values():
        items.sort(key=lambda c: (not c.retry, not c.in_window, c.idx))
    user_all = Counter(limits.user_in_flight)
    user_here = Counter(limits.user_in_flight_here)
    job = Counter(limits.job_in_flight)
    budget = limits.budget
    served = dict(limits.served)
    clock = max(served.values(), default=0.0)
    heads = {job_id: 0 for job_id in by_job}
    picked: list[Candidate] = []

    def allowed(c: Candidate) -> bool:
        cap = limits.job_max.get(c.job_id)
        return not (
            (cap is not None and job[c.job_id] >= cap)
            or (limits.user_max is not None and user_all[c.user] >= limits.user_max)
            or (limits.user_max_here is not None and user_here[c.user] >= limits.user_max_here)
            or (budget is not None and c.cost > budget + 1e-9)
        )

    while len(picked) < slots:
        best: Candidate | None = None
        best_key: tuple | None = None
        for job_id, at in heads.items():
            items = by_job[job_id]
            if at >= len(items) or not allowed(items[at]):
                continue
            c = items[at]
            user_key, job_key = served_keys(c)
            key = (
                *c.cls,
                user_here[c.user],
                served.get(user_key, 0.0),
                job[c.job_id],
                served.get(job_key, 0.0),
                not c.in_window,
                c.job_order,
                c.idx,
            )
            if best_key is None or key < best_key:
                best, best_key = c, key
        if best is None:
            break
        picked.append(best)
        heads[best.job_id] += 1
        user_all[best.user] += 1
        user_here[best.user] += 1
        job[best.job_id] += 1
        clock += 0.001
        for k in served_keys(best):
            served[k] = clock
        if budget is not None:
            budget -= best.cost
    return picked
