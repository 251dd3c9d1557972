"""The deployment's providers: the registry built once from settings, and what `app` asks of it.

Only here does `app` call into a provider's validation: its ParamError becomes InvalidInput.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from app.config import settings
from app.errors import InvalidInput
from providers import JobSpec, ParamError, Provider, build_registry, get_provider, provider_classes


@cache
def registry() -> dict[str, Provider]:
    return build_registry(settings().providers)


def provider(name: Any) -> Provider:
    """The provider called `name`; InvalidInput (field `provider`) lists the ones there are."""
    try:
        return get_provider(registry(), name)
    except ParamError as exc:
        raise InvalidInput(exc.field, exc.message) from None


def validate(
    chosen: Provider, model: str | None, prompt: str | None, prompts: list[str] | None, params: dict[str, Any]
) -> JobSpec:
    """The provider's check of a submission, with defaults filled; InvalidInput names the field."""
    try:
        return chosen.validate(model, prompt, prompts, params)
    except ParamError as exc:
        raise InvalidInput(exc.field, exc.message) from None


def gpu_queues() -> set[str]:
    """Queues whose providers run on a GPU."""
    return {cls.queue for cls in provider_classes(settings().providers.modules).values() if cls.gpu}


def billed_providers() -> list[str]:
    """Providers whose runs cost money (held back by the daily spending cap)."""
    return sorted(name for name, p in registry().items() if p.billed)


@dataclass(frozen=True)
class QueueWorker:
    """How a worker of one item queue runs, as its providers declare it (the process harness and
    the deploy files read this instead of naming queues)."""

    gpu: bool
    # Celery pool and concurrency; None: the worker's own choice (GPU queues run one lane per device).
    pool: str | None
    concurrency: int | None
    # Environment variables only this queue's workers may hold (e.g. a remote service's API key).
    secret_env: tuple[str, ...]


def queue_workers(modules: tuple[str, ...] | None = None) -> dict[str, QueueWorker]:
    """Item queue -> how its workers run, from the providers registered on it (`modules`: the
    provider modules of another process's settings, else this one's)."""
    found: dict[str, QueueWorker] = {}
    for cls in provider_classes(settings().providers.modules if modules is None else modules).values():
        seen = found.get(cls.queue)
        found[cls.queue] = QueueWorker(
            gpu=cls.gpu or (seen is not None and seen.gpu),
            pool=cls.worker_pool or (seen.pool if seen else None),
            concurrency=cls.worker_concurrency or (seen.concurrency if seen else None),
            secret_env=tuple(dict.fromkeys((*(seen.secret_env if seen else ()), *cls.secret_env))),
        )
    return found
