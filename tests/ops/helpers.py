"""Helpers for the operations tests: scraping /metrics, waiting for a quiet start, reaching the database."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import requests
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import System

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout} s")


def wait_for_epoch(system: System) -> None:
    """The reconciler's first round marks the broker's epoch; a job submitted before that round would
    be published twice (harmless, but it muddies what a test observes)."""
    wait_until(lambda: system.redis().get("bulkgen:epoch"), 30, "the reconciler's first round")


def scrape(system: System, auth: Any = None, headers: dict[str, str] | None = None) -> Samples:
    r = requests.get(f"{system.base_url}/metrics", auth=auth, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4"), r.headers
    samples: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: Samples, name: str, default: float | None = None, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    if key not in samples:
        if default is not None:
            return default
        raise AssertionError(f"no sample {name}{labels}; have {sorted(k for k in samples if k[0] == name)}")
    return samples[key]


def engine(system: System) -> sa.Engine:
    """The system's own database, for tests that need to move time (e.g. age a finished job)."""
    url = system.env["DATABASE_URL"]
    args = {"connect_args": {"timeout": 30}} if url.startswith("sqlite") else {}
    return sa.create_engine(url, **args)


METRICS_AUTH = ("prometheus", "scrape-secret")
