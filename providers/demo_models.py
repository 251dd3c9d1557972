"""Tiny demo models built locally from configs (no model hub).

The demo models use the real classes and the real loading path
(`save_pretrained` here, `from_pretrained` in the providers) with random weights
from a fixed seed, so every code path runs on a laptop CPU in seconds. Their
outputs are noise, by design.

Each builder is idempotent and safe when several processes call it at once: the
model is built into a temporary directory next to the target and renamed into
place; the loser of a race discards its copy. A marker file written last inside
the built directory says the build is complete.
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


def _ensure(root: Path, name: str, build: Callable[[Path], None], facts: dict) -> str:
    final = root / name
    if (final / MARKER).is_file():
        return str(final)
    with _BUILD_LOCK:
        if (final / MARKER).is_file():
            return str(final)
        return _build_and_rename(root, final, name, build, facts)


def _build_and_rename(root: Path, final: Path, name: str, build: Callable[[Path], None], facts: dict) -> str:
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=root))
    os.chmod(tmp, 0o755)
    try:
        started = time.monotonic()
        build(tmp)
        marker = {"name": name, "seed": SEED, "built_s": round(time.monotonic() - started, 3), **facts}
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
    # The official Sam3Processor (on hosts with torchvision) loads from these; the
    # provider's own pre/post-processing reads the same values.
    size = {"height": SAM3_DEMO_IMAGE_SIZE, "width": SAM3_DEMO_IMAGE_SIZE}
    (out / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "Sam3ImageProcessor",
                "processor_class": "Sam3Processor",
                "size": size,
                "mask_size": {"height": SAM3_DEMO_IMAGE_SIZE // 2, "width": SAM3_DEMO_IMAGE_SIZE // 2},
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
            {"processor_class": "Sam3Processor", "target_size": SAM3_DEMO_IMAGE_SIZE, "point_pad_value": -10},
            indent=2,
        )
        + "\n"
    )
