"""`python -m bulkgen_stack.workercheck`: the worker health check, run with a GPU host's environment (no database)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from bulkgen_stack.processes import free_port
from tests.conftest import System

ROOT = Path(__file__).resolve().parents[2]


def workercheck(system: System, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    # What a worker container has: the broker and storage, never the database.
    environment = system.stack.worker_env("wan_local", env)
    assert "DATABASE_URL" not in environment
    return subprocess.run(
        [sys.executable, "-m", "bulkgen_stack.workercheck", *args],
        env=environment,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_exit_0_when_a_worker_serves_the_queue(observed: System) -> None:
    ok = workercheck(observed, "--queue", "wan_local", "--timeout", "1.5")
    assert ok.returncode == 0, ok.stderr
    assert "wan_local@" in ok.stdout
    # As a container's HEALTHCHECK: only the worker on this host counts.
    mine = workercheck(observed, "--queue", "wan_local", "--this-host", "--timeout", "1.5")
    assert mine.returncode == 0 and f"@{socket.gethostname()}" in mine.stdout, mine.stderr
    # Without --queue: any worker of this host (a generic HEALTHCHECK for an image whatever its -Q).
    anyq = workercheck(observed, "--this-host", "--timeout", "1.5")
    assert anyq.returncode == 0 and "any queue" in anyq.stdout, anyq.stderr


def test_exit_1_when_no_worker_serves_the_queue(observed: System) -> None:
    none = workercheck(observed, "--queue", "sam3", "--timeout", "1")
    assert none.returncode == 1
    assert "no worker serves sam3" in none.stderr and "wan_local@" in none.stderr
    elsewhere = workercheck(observed, "--queue", "wan_local", "--host", "another-host", "--timeout", "1")
    assert elsewhere.returncode == 1
    quiet = workercheck(observed, "--queue", "runway", "--timeout", "1", "-q")
    assert quiet.returncode == 1 and quiet.stdout == quiet.stderr == ""


def test_exit_2_when_the_broker_is_unreachable(observed: System) -> None:
    nobody = f"redis://127.0.0.1:{free_port()}/0"
    down = workercheck(observed, "--queue", "wan_local", "--timeout", "1", env={"REDIS_URL": nobody})
    assert down.returncode == 2
    assert "broker unreachable" in down.stderr
