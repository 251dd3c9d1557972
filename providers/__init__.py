"""Providers: one module per way of turning an image into results, each registering itself.

Nothing here imports the rest of the project; heavy libraries (torch, diffusers,
transformers) are imported inside `load`/`run` only.
"""

from providers.base import (
    BatchEntry,
    Cancelled,
    FatalError,
    JobSpec,
    ModelInfo,
    OutputFile,
    ParamError,
    ParamSpec,
    Provider,
    ProviderError,
    RetryableError,
    RunContext,
    RunResult,
)
from providers.registry import (
    ProviderSettings,
    build_registry,
    get_provider,
    provider_classes,
    provider_queues,
    register,
)

__all__ = [
    "BatchEntry",
    "Cancelled",
    "FatalError",
    "JobSpec",
    "ModelInfo",
    "OutputFile",
    "ParamError",
    "ParamSpec",
    "Provider",
    "ProviderError",
    "ProviderSettings",
    "RetryableError",
    "RunContext",
    "RunResult",
    "build_registry",
    "get_provider",
    "provider_classes",
    "provider_queues",
    "register",
]
