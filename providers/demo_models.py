"""Tiny demo models built locally from configs (no model hub).

The demo models use the real classes and the real loading path
(`save_pretrained` here, `from_pretrained` in the providers) with random weights
from a fixed seed, so every code path runs on a laptop CPU in seconds. Their
outputs are noise, by design.

Each builder is idempotent and safe when several processes call it at once: the
model is built into a temporary directory next to the target and renamed into
place; the loser of a race discards its copy. A marker file written last inside
the built directory says the build is complete.

The real-size builders (`ensure_realsize_sam3`, `ensure_realsize_wan`) build the published
architectures at their real widths, still with random weights, for measuring memory, load time and
speed (`tests/providers/test_realsize.py`, `bench/gpu.py`). Only the tokenizers stay small: their
vocabularies are data that cannot be built offline, and token ids index the real-size embeddings.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import string
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MARKER = "DEMO_MODEL.json"
# Bump when a builder's config changes so old builds are not reused.
WAN_DEMO_VERSION = 2
SAM3_DEMO_VERSION = 1
WAN_LAYOUTS = ("wan2.1", "wan2.2", "ti2v")
# Plain data so a web host can derive the demo's limits (providers.wan.WanLimits) without building it.
WAN_DEMO_TRANSFORMER: dict[str, Any] = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 2,
    "attention_head_dim": 12,
    "text_dim": 32,
    "freq_dim": 256,
    "ffn_dim": 32,
    "num_layers": 1,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    # One rotary row per latent frame/row/column, as in real Wan: 32 failed at 480p and 161 frames.
    "rope_max_seq_len": 1024,
}
SEED = 0
# Builds in one process run one at a time (first imports of transformers are not
# thread-safe, and the seeded RNG is process-global); processes race on the rename.
_BUILD_LOCK = threading.Lock()


def ensure_demo_wan(root: str | os.PathLike[str], layout: str = "wan2.1") -> str:
    """Build (once) a tiny WAN image-to-video pipeline under `root`; return its directory.

    `layout` picks the checkpoint layout to imitate: "wan2.1" (CLIP image encoder,
    one transformer), "wan2.2" (A14B: transformer + transformer_2 with boundary_ratio)
    or "ti2v" (TI2V-5B: 48-channel VAE with 16x spatial compression, expand_timesteps).
    """
    if layout not in WAN_LAYOUTS:
        raise ValueError(f"unknown WAN demo layout {layout!r}; choose one of {WAN_LAYOUTS}")
    name = f"wan-demo-{layout}-v{WAN_DEMO_VERSION}"
    return _ensure(Path(root), name, lambda d: _build_wan(d, layout), {"layout": layout})


def wan_demo_vae_config(layout: str) -> dict[str, Any]:
    """The demo VAE's constructor arguments for `layout` (plain data, like WAN_DEMO_TRANSFORMER)."""
    if layout == "ti2v":
        return {
            "base_dim": 4,
            "decoder_base_dim": 4,
            "z_dim": 48,
            "dim_mult": [1, 1, 1, 1],
            "num_res_blocks": 1,
            "temperal_downsample": [False, True, True],
            "is_residual": True,
            "in_channels": 12,
            "out_channels": 12,
            "patch_size": 2,
            "scale_factor_temporal": 4,
            "scale_factor_spatial": 16,
            "latents_mean": [0.0] * 48,
            "latents_std": [1.0] * 48,
        }
    return {
        "base_dim": 3,
        "z_dim": 16,
        "dim_mult": [1, 1, 1, 1],
        "num_res_blocks": 1,
        "temperal_downsample": [False, True, True],
        "scale_factor_temporal": 4,
        "scale_factor_spatial": 8,
    }


def ensure_demo_sam3(root: str | os.PathLike[str]) -> str:
    """Build (once) a tiny SAM3 model + byte-level tokenizer under `root`; return its directory."""
    return _ensure(Path(root), f"sam3-demo-v{SAM3_DEMO_VERSION}", _build_sam3, {})


def is_demo_model(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / MARKER).is_file()


def _ensure(root: Path, name: str, build: Callable[[Path], dict | None], facts: dict) -> str:
    final = root / name
    if (final / MARKER).is_file():
        return str(final)
    with _BUILD_LOCK:
        if (final / MARKER).is_file():
            return str(final)
        return _build_and_rename(root, final, name, build, facts)


def _build_and_rename(
    root: Path, final: Path, name: str, build: Callable[[Path], dict | None], facts: dict
) -> str:
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=root))
    os.chmod(tmp, 0o755)
    try:
        started = time.monotonic()
        # A builder may return facts about what it built (parameter counts) for the marker.
        built = build(tmp)
        built = built if isinstance(built, dict) else {}
        marker = {
            "name": name,
            "seed": SEED,
            "built_s": round(time.monotonic() - started, 3),
            **facts,
            **built,
        }
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process finished first (the target exists and is not empty),
            # or a leftover without a marker is in the way: replace only the latter.
            if (final / MARKER).is_file():
                return str(final)
            shutil.rmtree(final, ignore_errors=True)
            os.rename(tmp, final)
        return str(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _seeded():
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        yield


def built_facts(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What a builder recorded in its marker (name, seed, build seconds, parameter counts)."""
    return json.loads((Path(path) / MARKER).read_text())


def _t5_tokenizer():
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [(c, -3.0) for c in string.printable if not c.isspace()]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def _build_wan(out: Path, layout: str) -> None:
    from diffusers import (
        AutoencoderKLWan,
        UniPCMultistepScheduler,
        WanImageToVideoPipeline,
        WanPipeline,
        WanTransformer3DModel,
    )
    from transformers import UMT5Config, UMT5EncoderModel

    with _seeded():
        tokenizer = _t5_tokenizer()
        text_encoder = UMT5EncoderModel(
            UMT5Config(
                vocab_size=len(tokenizer),
                d_model=32,
                d_kv=8,
                d_ff=32,
                num_layers=1,
                num_heads=4,
                relative_attention_num_buckets=8,
            )
        )
        scheduler = UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0
        )

        def transformer(in_channels: int, out_channels: int, image_dim: int | None = None):
            return WanTransformer3DModel(
                **WAN_DEMO_TRANSFORMER,
                in_channels=in_channels,
                out_channels=out_channels,
                image_dim=image_dim,
            )

        if layout == "ti2v":
            vae = AutoencoderKLWan(**wan_demo_vae_config(layout))
            # The real TI2V-5B checkpoint is saved as a WanPipeline with expand_timesteps.
            pipe = WanPipeline(
                tokenizer=tokenizer,
                text_encoder=text_encoder,
                vae=vae,
                transformer=transformer(48, 48),
                scheduler=scheduler,
                expand_timesteps=True,
            )
        else:
            vae = AutoencoderKLWan(**wan_demo_vae_config(layout))
            if layout == "wan2.2":
                pipe = WanImageToVideoPipeline(
                    tokenizer=tokenizer,
                    text_encoder=text_encoder,
                    vae=vae,
                    transformer=transformer(36, 16),
                    transformer_2=transformer(36, 16),
                    scheduler=scheduler,
                    boundary_ratio=0.9,
                )
            else:
                from transformers import CLIPVisionConfig, CLIPVisionModel
                from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

                image_encoder = CLIPVisionModel(
                    CLIPVisionConfig(
                        hidden_size=32,
                        projection_dim=32,
                        num_hidden_layers=2,
                        num_attention_heads=2,
                        image_size=32,
                        intermediate_size=37,
                        patch_size=8,
                    )
                )
                pipe = WanImageToVideoPipeline(
                    tokenizer=tokenizer,
                    text_encoder=text_encoder,
                    vae=vae,
                    transformer=transformer(36, 16, image_dim=32),
                    scheduler=scheduler,
                    image_encoder=image_encoder,
                    image_processor=CLIPImageProcessorPil(crop_size=32, size={"shortest_edge": 32}),
                )
        pipe.save_pretrained(str(out))


def byte_level_clip_tokenizer():
    """A CLIPTokenizer whose vocabulary is the 256 byte symbols (with and without `</w>`)."""
    from transformers import CLIPTokenizer

    # GPT-2 / CLIP byte-to-unicode table.
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    symbols = [chr(c) for _, c in sorted(zip(bs, cs, strict=True))]
    vocab: dict[str, int] = {}
    for s in symbols:
        vocab[s] = len(vocab)
    for s in symbols:
        vocab[s + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[])


SAM3_DEMO_IMAGE_SIZE = 64


def _build_sam3(out: Path) -> None:
    from transformers import Sam3Config, Sam3Model

    tokenizer = byte_level_clip_tokenizer()
    small = {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}
    config = Sam3Config(
        vision_config={
            "backbone_config": {
                "model_type": "sam3_vit_model",
                "num_hidden_layers": 1,
                "image_size": SAM3_DEMO_IMAGE_SIZE,
                "pretrain_image_size": SAM3_DEMO_IMAGE_SIZE,
                "patch_size": 8,
                "window_size": 4,
                "global_attn_indexes": [1],
                **small,
            },
            "fpn_hidden_size": 32,
            "backbone_feature_sizes": [[32, 32], [16, 16], [8, 8]],
        },
        text_config={
            "model_type": "clip_text_model",
            "vocab_size": len(tokenizer),
            "projection_dim": 32,
            "num_hidden_layers": 1,
            "max_position_embeddings": 32,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            **small,
        },
        geometry_encoder_config={"num_layers": 1, **small},
        detr_encoder_config={"num_layers": 1, **small},
        detr_decoder_config={"num_layers": 1, "num_queries": 8, **small},
        mask_decoder_config={"hidden_size": 32, "num_attention_heads": 2},
    )
    with _seeded():
        model = Sam3Model(config).eval()
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    _write_sam3_processing(out, SAM3_DEMO_IMAGE_SIZE, SAM3_DEMO_IMAGE_SIZE // 2)


def _write_sam3_processing(out: Path, image_size: int, mask_size: int) -> None:
    """The official Sam3Processor (on hosts with torchvision) loads from these; the provider's own
    pre/post-processing reads the same values."""
    size = {"height": image_size, "width": image_size}
    (out / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "Sam3ImageProcessor",
                "processor_class": "Sam3Processor",
                "size": size,
                "mask_size": {"height": mask_size, "width": mask_size},
                "do_resize": True,
                "resample": 2,
                "do_rescale": True,
                "rescale_factor": 1 / 255,
                "do_normalize": True,
                "image_mean": [0.5, 0.5, 0.5],
                "image_std": [0.5, 0.5, 0.5],
                "do_convert_rgb": True,
            },
            indent=2,
        )
        + "\n"
    )
    (out / "processor_config.json").write_text(
        json.dumps(
            {"processor_class": "Sam3Processor", "target_size": image_size, "point_pad_value": -10},
            indent=2,
        )
        + "\n"
    )


# ----- real-size models (random weights) -------------------------------------------------------

REALSIZE_VERSION = 1
# The transformers of the published checkpoints, as diffusers' scripts/convert_wan_to_diffusers.py
# converts them ("Wan2.2-TI2V-5B", "Wan2.2-I2V-14B-720p"); A14B has two (high / low noise).
WAN_REALSIZE_TRANSFORMER: dict[str, dict[str, Any]] = {
    "ti2v": {
        "patch_size": (1, 2, 2),
        "num_attention_heads": 24,
        "attention_head_dim": 128,
        "in_channels": 48,
        "out_channels": 48,
        "text_dim": 4096,
        "freq_dim": 256,
        "ffn_dim": 14336,
        "num_layers": 30,
        "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads",
        "eps": 1e-6,
        "added_kv_proj_dim": None,
    },
    "wan2.2": {
        "patch_size": (1, 2, 2),
        "num_attention_heads": 40,
        "attention_head_dim": 128,
        "in_channels": 36,
        "out_channels": 16,
        "text_dim": 4096,
        "freq_dim": 256,
        "ffn_dim": 13824,
        "num_layers": 40,
        "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads",
        "eps": 1e-6,
        "added_kv_proj_dim": None,
    },
}
# The Wan 2.2 VAE (TI2V-5B): the same script's vae22_diffusers_config. A14B uses the Wan 2.1 VAE,
# which is AutoencoderKLWan's default configuration.
WAN22_VAE: dict[str, Any] = {
    "base_dim": 160,
    "decoder_base_dim": 256,
    "z_dim": 48,
    "is_residual": True,
    "in_channels": 12,
    "out_channels": 12,
    "patch_size": 2,
    "scale_factor_temporal": 4,
    "scale_factor_spatial": 16,
    # fmt: off
    "latents_mean": [
        -0.2289,
        -0.0052,
        -0.1323,
        -0.2339,
        -0.2799,
        0.0174,
        0.1838,
        0.1557,
        -0.1382,
        0.0542,
        0.2813,
        0.0891,
        0.1570,
        -0.0098,
        0.0375,
        -0.1825,
        -0.2246,
        -0.1207,
        -0.0698,
        0.5109,
        0.2665,
        -0.2108,
        -0.2158,
        0.2502,
        -0.2055,
        -0.0322,
        0.1109,
        0.1567,
        -0.0729,
        0.0899,
        -0.2799,
        -0.1230,
        -0.0313,
        -0.1649,
        0.0117,
        0.0723,
        -0.2839,
        -0.2083,
        -0.0520,
        0.3748,
        0.0152,
        0.1957,
        0.1433,
        -0.2944,
        0.3573,
        -0.0548,
        -0.1681,
        -0.0667,
    ],
    "latents_std": [
        0.4765,
        1.0364,
        0.4514,
        1.1677,
        0.5313,
        0.4990,
        0.4818,
        0.5013,
        0.8158,
        1.0344,
        0.5894,
        1.0901,
        0.6885,
        0.6165,
        0.8454,
        0.4978,
        0.5759,
        0.3523,
        0.7135,
        0.6804,
        0.5833,
        1.4146,
        0.8986,
        0.5659,
        0.7069,
        0.5338,
        0.4889,
        0.4917,
        0.4069,
        0.4999,
        0.6866,
        0.4093,
        0.5709,
        0.6065,
        0.6415,
        0.4944,
        0.5726,
        1.2042,
        0.5458,
        1.6887,
        0.3971,
        1.0600,
        0.3943,
        0.5537,
        0.5444,
        0.4089,
        0.7468,
        0.7744,
    ],
    # fmt: on
}
# google/umt5-xxl's encoder, the text encoder of every Wan checkpoint (5.7 B parameters).
UMT5_XXL: dict[str, Any] = {
    "vocab_size": 256384,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "feed_forward_proj": "gated-gelu",
}
# A stand-in with the width the transformer reads (text_dim 4096) and one small layer: what the
# real-size tests measure is the transformer and the VAE, not the text encoder.
UMT5_NARROW: dict[str, Any] = {
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 256,
    "num_layers": 1,
    "num_heads": 2,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "feed_forward_proj": "gated-gelu",
}
TEXT_ENCODERS = ("narrow", "umt5-xxl")
# The scheduler each checkpoint ships: UniPC on flow sigmas, shift 5 for TI2V-5B and 3 for A14B.
WAN_FLOW_SHIFT = {"ti2v": 5.0, "wan2.2": 3.0}
# SAM3's published preprocessing (Sam3ImageProcessor's defaults): 1008 px input, 288 px masks.
SAM3_IMAGE_SIZE = 1008
SAM3_MASK_SIZE = 288


def ensure_realsize_sam3(root: str | os.PathLike[str], device: str = "cpu") -> str:
    """Build (once) SAM3 at its published configuration (`Sam3Config()`, 840 M parameters) with
    random weights and a byte-level tokenizer; return its directory.

    `device` is where the weights are initialised (a GPU host builds much faster on its GPU);
    they are saved from the CPU either way.
    """
    return _ensure(
        Path(root), f"sam3-realsize-v{REALSIZE_VERSION}", lambda d: _build_sam3_realsize(d, device), {}
    )


def ensure_realsize_wan(
    root: str | os.PathLike[str],
    layout: str = "ti2v",
    num_layers: int | None = None,
    text_encoder: str = "narrow",
    device: str = "cpu",
) -> str:
    """Build (once) a Wan 2.2 pipeline at the published widths with random weights; return its directory.

    `layout`: "ti2v" (TI2V-5B: 5 B transformer, Wan 2.2 VAE) or "wan2.2" (I2V A14B: two 14 B
    transformers, Wan 2.1 VAE). `num_layers`: transformer blocks (None: the published 30 / 40);
    fewer keeps every tensor's width and the VAE as published. `text_encoder`: "narrow" (UMT5 at the
    published width, one small layer) or "umt5-xxl" (the published size). Transformers and the text
    encoder are saved in bfloat16, the VAE in float32, as the published checkpoints run.
    """
    if layout not in WAN_REALSIZE_TRANSFORMER:
        raise ValueError(
            f"unknown real-size WAN layout {layout!r}; choose one of {tuple(WAN_REALSIZE_TRANSFORMER)}"
        )
    if text_encoder not in TEXT_ENCODERS:
        raise ValueError(f"unknown text encoder {text_encoder!r}; choose one of {TEXT_ENCODERS}")
    layers = num_layers or WAN_REALSIZE_TRANSFORMER[layout]["num_layers"]
    name = f"wan-realsize-{layout}-{layers}l-{text_encoder}-v{REALSIZE_VERSION}"
    facts = {"layout": layout, "num_layers": layers, "text_encoder": text_encoder}
    return _ensure(
        Path(root), name, lambda d: _build_wan_realsize(d, layout, layers, text_encoder, device), facts
    )


def _params(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


@contextlib.contextmanager
def _building(device: str, dtype: Any):
    """New modules' weights are created on `device` in `dtype`, from the fixed seed."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with _seeded(), torch.device(device):
            if device.startswith("cuda"):
                torch.cuda.manual_seed_all(SEED)
            yield
    finally:
        torch.set_default_dtype(previous)


def _save_module(module: Any, out: Path) -> int:
    """Save one component from the CPU and drop it; returns its parameter count."""
    count = _params(module)
    module.to("cpu").save_pretrained(str(out), max_shard_size="5GB")
    return count


def _build_wan_realsize(out: Path, layout: str, layers: int, text_encoder: str, device: str) -> dict:
    import torch
    from diffusers import (
        AutoencoderKLWan,
        UniPCMultistepScheduler,
        WanImageToVideoPipeline,
        WanPipeline,
        WanTransformer3DModel,
    )
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = _t5_tokenizer()
    text_config = UMT5Config(
        **(UMT5_XXL if text_encoder == "umt5-xxl" else {**UMT5_NARROW, "vocab_size": len(tokenizer)})
    )
    transformer_config = {**WAN_REALSIZE_TRANSFORMER[layout], "num_layers": layers}
    vae_config = WAN22_VAE if layout == "ti2v" else {}
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=WAN_FLOW_SHIFT[layout]
    )
    # model_index.json from the pipeline class itself, built on the meta device (no memory, no time).
    with torch.device("meta"):
        parts: dict[str, Any] = {
            "tokenizer": tokenizer,
            "text_encoder": UMT5EncoderModel(text_config),
            "vae": AutoencoderKLWan(**vae_config),
            "transformer": WanTransformer3DModel(**transformer_config),
            "scheduler": scheduler,
        }
        if layout == "ti2v":
            # The published TI2V-5B checkpoint is a WanPipeline with expand_timesteps.
            WanPipeline(**parts, expand_timesteps=True).save_config(str(out))
        else:
            parts["transformer_2"] = WanTransformer3DModel(**transformer_config)
            WanImageToVideoPipeline(**parts, boundary_ratio=0.9).save_config(str(out))
    del parts
    tokenizer.save_pretrained(str(out / "tokenizer"))
    scheduler.save_pretrained(str(out / "scheduler"))
    # One component at a time, so the largest (A14B: two 14 B transformers) never share memory.
    params: dict[str, int] = {}
    with _building(device, torch.bfloat16):
        params["text_encoder"] = _save_module(UMT5EncoderModel(text_config), out / "text_encoder")
    names = ["transformer"] if layout == "ti2v" else ["transformer", "transformer_2"]
    for name in names:
        # Both A14B experts get the same random weights: nothing measured here depends on them.
        with _building(device, torch.bfloat16):
            params[name] = _save_module(WanTransformer3DModel(**transformer_config), out / name)
    with _building(device, torch.float32):
        params["vae"] = _save_module(AutoencoderKLWan(**vae_config), out / "vae")
    return {"params": params, "device": device}


def _build_sam3_realsize(out: Path, device: str) -> dict:
    import torch
    from transformers import Sam3Config, Sam3Model

    tokenizer = byte_level_clip_tokenizer()
    config = Sam3Config()
    # Token ids are the tokenizer's; every size stays the published one (vocabulary 49,408).
    config.text_config.bos_token_id = tokenizer.bos_token_id
    config.text_config.eos_token_id = tokenizer.eos_token_id
    config.text_config.pad_token_id = tokenizer.pad_token_id
    with _building(device, torch.float32):
        model = Sam3Model(config).eval()
    count = _params(model)
    model.to("cpu").save_pretrained(str(out))
    del model
    tokenizer.save_pretrained(str(out))
    _write_sam3_processing(out, SAM3_IMAGE_SIZE, SAM3_MASK_SIZE)
    return {"params": {"model": count}, "device": device}
