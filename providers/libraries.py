"""What the optional libraries on this host can do: providers ask before choosing a code path."""

from __future__ import annotations

import importlib.util


def torchvision_works() -> bool:
    """Whether torchvision imports with its compiled ops: a wheel built for another torch imports,
    then fails at the first op (e.g. nms)."""
    if importlib.util.find_spec("torchvision") is None:
        return False
    try:
        import torch
        import torchvision  # noqa: F401

        torch.ops.torchvision.nms  # noqa: B018 - raises when the compiled ops are missing
        return True
    except Exception:
        return False
