"""What the providers rely on their libraries for on a GPU, checked here on CPU so that the lowest
releases pyproject.toml allows are held to it (`make test-floors` runs this directory on them)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.models


def test_wan_loads_in_the_dtype_a_gpu_worker_asks_for(demo_model_root):
    import torch
    from diffusers import WanImageToVideoPipeline

    from providers.demo_models import ensure_demo_wan

    # The call WanProvider makes on CUDA. diffusers before 0.40 logs "Keyword arguments {'dtype': ...}
    # are not expected" and loads float32: twice the GPU memory, found only on a GPU.
    pipe = WanImageToVideoPipeline.from_pretrained(ensure_demo_wan(demo_model_root), dtype=torch.bfloat16)

    # The bulk of the memory: Wan keeps a few norms and its time embedding in float32 on purpose.
    linear = [m for m in pipe.transformer.blocks.modules() if isinstance(m, torch.nn.Linear)]
    assert linear
    assert {m.weight.dtype for m in linear} == {torch.bfloat16}
    assert {p.dtype for p in pipe.text_encoder.parameters()} == {torch.bfloat16}


def test_sam3_loads_in_the_dtype_a_gpu_worker_asks_for(demo_model_root):
    import torch
    from transformers import Sam3Model

    from providers.demo_models import ensure_demo_sam3

    model = Sam3Model.from_pretrained(ensure_demo_sam3(demo_model_root), dtype=torch.bfloat16)

    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
