"""The deployment's provider registry, built once from settings."""

from __future__ import annotations

from functools import cache

from app.config import settings
from providers import Provider, build_registry


@cache
def registry() -> dict[str, Provider]:
    return build_registry(settings().providers)
