"""Fixtures for the operations tests."""

from __future__ import annotations

import pytest

from tests.conftest import System, SystemFactory
from tests.ops.helpers import METRICS_AUTH


@pytest.fixture(scope="session")
def observed(systems: SystemFactory) -> System:
    """A control worker and one wan_local worker, /metrics behind basic auth, retention after a day
    swept every second; shared by the metrics, retention and worker-check tests (each uses its own
    images and jobs)."""
    return systems.start(
        "ops-observed",
        workers=("control", "wan_local"),
        env={
            "METRICS_BASIC_AUTH": ":".join(METRICS_AUTH),
            "OUTPUT_RETENTION_DAYS": "1",
            "INPUT_RETENTION_DAYS": "1",
            "RETENTION_INTERVAL_S": "1",
            "ORPHAN_GRACE_S": "0",
            # One worker process even on a GPU machine: the tests count items waiting behind it.
            "WORKER_DEVICE": "cpu",
        },
        shared=True,
    )
