"""What this worker process is: its queues, its name, the devices it owns, how it is sized.

GPU queues run in one process per host (Celery's threads pool): the process owns every visible
GPU through one lane per device (tasks/lanes.py). Nothing here initialises CUDA.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
import time

from app.config import settings
from app.provider_registry import gpu_queues

# Queues this worker consumes and its node name, recorded at start-up (celeryd_after_setup).
consumed_queues: set[str] = set()
node_name = "worker"
# Item threads of a worker without lanes (its pool's concurrency).
pool_size = 1
log = logging.getLogger(__name__)


def visible_gpus() -> list[str]:
    """GPU indices this host offers, read without initialising CUDA."""
    if os.environ.get("WORKER_DEVICE"):
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [v.strip() for v in visible.split(",") if v.strip() and v.strip() != "-1"]
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def lane_devices(count: int | None = None) -> list[tuple[str, str | None]]:
    """(torch device, physical GPU id) for each lane: one per visible GPU, or `count` (`-c`) lanes
    dealt over them; CPU lanes when there is no GPU (or WORKER_DEVICE says where to run)."""
    explicit = os.environ.get("WORKER_DEVICE")
    gpus = visible_gpus()
    n = count or len(gpus) or 1
    if explicit:
        return [(explicit, None)] * n
    if not gpus:
        return [("cpu", None)] * n
    # Lane i uses torch's index i among the visible devices (CUDA_VISIBLE_DEVICES renumbers them).
    return [(f"cuda:{i % len(gpus)}", gpus[i % len(gpus)]) for i in range(n)]


def cpu_description() -> str:
    return f"cpu ({os.cpu_count()} cores)"


def is_gpu_worker(queues: set[str]) -> bool:
    return bool(queues) and queues <= gpu_queues()


def lease_settings() -> tuple[float, float]:
    s = settings()
    return float(s.lease_ttl_s), float(s.heartbeat_s)


# What the Workers page shows of a process without lanes (the Runway and control workers): the items
# it runs now (item id -> job id, since when), and whether it is draining (warm shutdown: the running
# items finish, no new one starts).
running: dict[str, tuple[str, float]] = {}
draining = False
_announcing = threading.Lock()
_stopped = threading.Event()


def item_started(item_id: str, job_id: str) -> None:
    running[item_id] = (job_id, time.time())


def item_ended(item_id: str) -> None:
    running.pop(item_id, None)


def worker_kind(queues: set[str]) -> str:
    """ "gpu" (lanes own devices), "control" (the database side) or "api" (remote work: Runway)."""
    if is_gpu_worker(queues):
        return "gpu"
    return "control" if queues <= {"control"} else "api"


def process_state(busy: bool) -> str:
    return "draining" if draining else ("busy" if busy else "ready")


def announce_slots(queues: list[str], slots: int | None = None) -> None:
    """Tell the scheduler, every heartbeat, how many items this process runs at once: it keeps
    about that many of these queues' items in the broker (app/services/scheduler.py). The same entry
    tells the Workers page what the process is doing."""
    from app.coordination import Coordination, redis_client

    kind = worker_kind(set(queues))
    name = f"{node_name}/{os.getpid()}"

    def about() -> dict[str, object]:
        from tasks.lanes import loaded_models, process_providers

        now = list(running.items())
        return {
            "kind": kind,
            "node": node_name,
            "pid": os.getpid(),
            "worker": name,
            "device": "API" if kind == "api" else "CPU",
            "state": process_state(bool(now)),
            "models": loaded_models(process_providers()) if kind == "api" else [],
            "current": [{"item": item, "job": job, "since": since} for item, (job, since) in now],
        }

    def beat() -> None:
        coord = Coordination(redis_client(settings().broker_url))
        while not _stopped.is_set():
            with _announcing:
                if _stopped.is_set():
                    return
                try:
                    offered = 0 if draining else (pool_size if slots is None else slots)
                    coord.announce_consumer(name, queues, offered, **about())
                except Exception as exc:  # noqa: BLE001 - Redis away: try again next beat
                    log.warning("could not announce this worker's slots: %s", exc)
            _stopped.wait(max(0.5, settings().heartbeat_s))

    threading.Thread(target=beat, daemon=True, name="announce-slots").start()


def stop_announcing(lanes: list[str] | None = None) -> None:
    """At a clean exit: no more announcements, and what this process announced goes (the Workers page
    stops listing it at once rather than showing it lost)."""
    from app.coordination import Coordination, redis_client

    with _announcing:
        _stopped.set()
        try:
            Coordination(redis_client(settings().broker_url)).forget_worker(
                f"{node_name}/{os.getpid()}", lanes
            )
        except Exception as exc:  # noqa: BLE001 - the entries then age out
            log.warning("could not remove this worker's announcements: %s", exc)
