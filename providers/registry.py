"""Providers found by registration.

Each provider module ends with `register(TheProvider)`. The built-in modules are imported here;
a deployment adds its own through the module list of its settings (BULKGEN_PROVIDERS) or the
`bulkgen.providers` entry point group, imported in every process that builds the registry.

The registry is built from explicit settings (the caller reads the environment), so this package
imports nothing of the project. A provider whose heavy libraries are missing on this host is still
offered for validation: its heavy imports happen in `load`, which runs only on workers.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points

from providers.base import ParamError, Provider

log = logging.getLogger(__name__)

# Imported first, in this order (the order of listings); a module whose own imports fail is left out.
BUILTIN_MODULES = ("providers.echo", "providers.wan", "providers.runway", "providers.sam3")
ENTRY_POINT_GROUP = "bulkgen.providers"

_registered: dict[str, type[Provider]] = {}
_entry_points_loaded = False


@dataclass(frozen=True)
class ProviderSettings:
    # Modules of providers beyond the built-in ones, imported when the registry is built.
    modules: tuple[str, ...] = ()
    # Diagnostic provider: on in the embedded default and tests, off in production.
    enable_echo: bool = False
    # Diagnostic provider's model load: how long it takes, and an error it fails with (tests, drills).
    echo_load_delay_s: float = 0.0
    echo_load_error: str | None = None
    # Hub id or local directory; None means "build and use the tiny demo model".
    wan_model: str | None = None
    sam3_model: str | None = None
    # Where demo models are built when no real model is configured.
    demo_model_dir: str = "var/models"
    # Memory savers; None: chosen at load from the GPU's free memory and the model's size.
    wan_cpu_offload: bool | None = None
    wan_vae_tiling: bool | None = None
    runway_base_url: str = "https://api.dev.runwayml.com"
    runway_api_key: str | None = None
    # True when runway_base_url points at the local Runway-compatible simulator.
    runway_simulated: bool = False
    runway_poll_interval_s: float = 5.0
    # Per-request read timeout towards Runway (a lost answer to a create is never re-sent).
    runway_request_timeout_s: float = 60.0


def register(provider: type[Provider]) -> type[Provider]:
    """Offer a provider class (also usable as a class decorator). Its `enabled(settings)` decides
    whether a deployment builds it; `from_settings(settings)` builds it."""
    existing = _registered.get(provider.name)
    if existing is not None and existing is not provider:
        raise ValueError(
            f"two providers are named {provider.name!r}: {existing.__module__}.{existing.__qualname__} "
            f"and {provider.__module__}.{provider.__qualname__}"
        )
    _registered[provider.name] = provider
    return provider


def load_modules(modules: Iterable[str] = ()) -> None:
    """Import the built-in provider modules, the entry points' and `modules` (each registers its
    providers). A named module that does not import is an error: the deployment asked for it."""
    for name in BUILTIN_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            log.warning("provider module %s left out: %s", name, exc)
    global _entry_points_loaded
    if not _entry_points_loaded:
        for entry in entry_points(group=ENTRY_POINT_GROUP):
            entry.load()
        _entry_points_loaded = True
    for name in modules:
        importlib.import_module(name)


def provider_classes(modules: Iterable[str] = ()) -> dict[str, type[Provider]]:
    """Every registered provider class, by name, once the given modules are imported."""
    load_modules(modules)
    return dict(_registered)


def registered_queues() -> list[str]:
    """The queues of the providers registered so far, in registration order."""
    return list(dict.fromkeys(cls.queue for cls in _registered.values()))


def provider_queues(modules: Iterable[str] = ()) -> list[str]:
    """The item queues: one per queue some registered provider declares, enabled or not (a queue
    must exist wherever a message for it may be published or consumed)."""
    load_modules(modules)
    return registered_queues()


def build_registry(settings: ProviderSettings) -> dict[str, Provider]:
    """Every provider this deployment offers, keyed by name."""
    classes = provider_classes(settings.modules)
    return {name: cls.from_settings(settings) for name, cls in classes.items() if cls.enabled(settings)}


def get_provider(registry: dict[str, Provider], name: str | None) -> Provider:
    if not name:
        raise ParamError("provider", f"provider is required; choose one of {sorted(registry)}")
    if not isinstance(name, str):
        raise ParamError("provider", f"provider must be a string; choose one of {sorted(registry)}")
    try:
        return registry[name]
    except KeyError:
        raise ParamError("provider", f"unknown provider {name!r}; choose one of {sorted(registry)}") from None
