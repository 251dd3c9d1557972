"""Parameter validation against a provider's ParamSpec list."""

from __future__ import annotations

import math
from typing import Any

from providers.base import ParamError, ParamSpec


def _coerce(spec: ParamSpec, value: Any) -> Any:
    field = f"params.{spec.name}"
    # NaN passes every range comparison (the form's float("nan")) and int(inf) raises.
    if spec.type in ("int", "float") and isinstance(value, float) and not math.isfinite(value):
        raise ParamError(field, f"{spec.name} must be a finite number")
    if spec.type == "int":
        if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
            raise ParamError(field, f"{spec.name} must be an integer")
        value = int(value)
    elif spec.type == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ParamError(field, f"{spec.name} must be a number")
        value = float(value)
    elif spec.type == "bool":
        if not isinstance(value, bool):
            raise ParamError(field, f"{spec.name} must be true or false")
    elif spec.type in ("str", "enum"):
        if not isinstance(value, str):
            raise ParamError(field, f"{spec.name} must be a string")
    elif spec.type == "list[str]":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ParamError(field, f"{spec.name} must be a list of strings")
    if spec.choices is not None and value not in spec.choices:
        raise ParamError(field, f"{spec.name} must be one of {spec.choices}, not {value!r}")
    if spec.minimum is not None and value < spec.minimum:
        raise ParamError(field, f"{spec.name} must be at least {spec.minimum}")
    if spec.maximum is not None and value > spec.maximum:
        raise ParamError(field, f"{spec.name} must be at most {spec.maximum}")
    return value


def validate_params(specs: list[ParamSpec], params: dict[str, Any]) -> dict[str, Any]:
    """Return params with defaults filled; unknown names and bad values raise ParamError."""
    if not isinstance(params, dict):
        raise ParamError("params", "params must be an object")
    known = {s.name: s for s in specs}
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ParamError(f"params.{unknown[0]}", f"unknown parameter {unknown[0]!r}; known: {sorted(known)}")
    clean: dict[str, Any] = {}
    for spec in specs:
        if spec.name in params and params[spec.name] is not None:
            clean[spec.name] = _coerce(spec, params[spec.name])
        elif spec.default is not None:
            clean[spec.name] = spec.default
    return clean
