"""Per-process worker state: the device this process owns and the providers it has loaded.

Models load once per process, after fork (CUDA does not survive fork), on first use
or at process start when PRELOAD_MODELS is on.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import threading
import time

from app.config import env_bool, settings
from app.providers import registry
from providers import Provider, get_provider

log = logging.getLogger(__name__)

_lock = threading.Lock()
_loaded: dict[str, Provider] = {}
_device: str | None = None
GPU_QUEUES = {"wan_local", "sam3"}
# Queues this worker consumes and its node name, recorded in the parent before fork.
consumed_queues: set[str] = set()
node_name = "worker"


def visible_gpus() -> list[str]:
    """GPU indices this host offers, read without initialising CUDA (safe before fork)."""
    if os.environ.get("WORKER_DEVICE"):
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [v for v in visible.split(",") if v.strip() and v.strip() != "-1"]
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def pin_process(index: int) -> str:
    """Give this (child) process one GPU by index, before anything imports CUDA."""
    global _device
    explicit = os.environ.get("WORKER_DEVICE")
    gpus = visible_gpus()
    if explicit:
        _device = explicit
    elif gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
        _device = "cuda:0"
    else:
        _device = "cpu"
    return _device


def device() -> str:
    return _device or pin_process(0)


_description: str | None = None


def device_description() -> str:
    """E.g. "GPU 3: NVIDIA H200, 143771 MiB" — shown per item and per worker."""
    global _description
    if _description is not None:
        return _description
    dev = device()
    if not dev.startswith("cuda"):
        return f"cpu ({os.cpu_count()} cores)"
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES", "?")
    try:
        import torch

        props = torch.cuda.get_device_properties(0)
        _description = f"GPU {gpu}: {props.name}, {props.total_memory // 2**20} MiB"
    except Exception as exc:  # noqa: BLE001 - description only; the provider reports real CUDA errors
        return f"GPU {gpu}: unavailable ({type(exc).__name__})"
    return _description


def loaded_provider(name: str) -> Provider:
    with _lock:
        if name in _loaded:
            return _loaded[name]
        provider = get_provider(registry(), name)
        started = time.monotonic()
        provider.load(device())
        log.info("loaded provider %s on %s in %.2f s", name, device(), time.monotonic() - started)
        _loaded[name] = provider
        return provider


def preload() -> None:
    """Load the providers whose own queue this worker serves (not the diagnostic one)."""
    if not env_bool("PRELOAD_MODELS", True):
        return
    for name, provider in registry().items():
        if provider.queue in consumed_queues and provider.name != "echo":
            try:
                loaded_provider(name)
            except Exception:  # noqa: BLE001 - a broken model fails its items with a clear error instead
                log.exception("could not preload provider %s", name)


def gpu_queue_concurrency(queues: set[str]) -> int | None:
    """One process per visible GPU for GPU queues (1 on a CPU-only host); None: Celery's default."""
    if not queues or not queues <= GPU_QUEUES:
        return None
    return len(visible_gpus()) or 1


def announce() -> None:
    """Record this process's device under its worker's name, for the queues view."""
    from app.coordination import DEVICES_KEY, redis_client

    entry = {
        "device": device_description(),
        "queues": sorted(consumed_queues),
        "pid": os.getpid(),
        "at": time.time(),
    }
    try:
        redis_client(settings().broker_url).hset(DEVICES_KEY, f"{node_name}/{os.getpid()}", json.dumps(entry))
    except Exception as exc:  # noqa: BLE001 - informational
        log.warning("could not announce device: %s", exc)


def lease_settings() -> tuple[float, float]:
    s = settings()
    return float(s.lease_ttl_s), float(s.heartbeat_s)
