"""Providers found by name.

The registry is built from explicit settings (the caller reads the environment),
so this package imports nothing of the project. A provider whose optional
libraries are missing is still listed for validation: its heavy imports happen in
`load`, which runs only on workers.
"""

from __future__ import annotations

from dataclasses import dataclass

from providers.base import ParamError, Provider


@dataclass(frozen=True)
class ProviderSettings:
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


def build_registry(settings: ProviderSettings) -> dict[str, Provider]:
    """Every provider this deployment offers, keyed by name."""
    from providers.echo import EchoProvider

    found: list[Provider] = []
    if settings.enable_echo:
        found.append(EchoProvider(settings.echo_load_delay_s, settings.echo_load_error))
    for factory in _real_provider_factories():
        found.append(factory(settings))
    return {p.name: p for p in found}


def _real_provider_factories() -> list:
    """The real providers, imported lazily so a missing module never breaks the registry."""
    factories = []
    try:
        from providers.wan import WanProvider

        factories.append(WanProvider.from_settings)
    except ImportError:
        pass
    try:
        from providers.sam3 import Sam3Provider

        factories.append(Sam3Provider.from_settings)
    except ImportError:
        pass
    try:
        from providers.runway import RunwayProvider

        factories.append(RunwayProvider.from_settings)
    except ImportError:
        pass
    return factories


def get_provider(registry: dict[str, Provider], name: str | None) -> Provider:
    if not name:
        raise ParamError("provider", f"provider is required; choose one of {sorted(registry)}")
    if not isinstance(name, str):
        raise ParamError("provider", f"provider must be a string; choose one of {sorted(registry)}")
    try:
        return registry[name]
    except KeyError:
        raise ParamError("provider", f"unknown provider {name!r}; choose one of {sorted(registry)}") from None
