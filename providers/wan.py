"""WAN image-to-video on a local GPU (diffusers `WanImageToVideoPipeline`).

Supports the three diffusers checkpoint layouts, detected from `model_index.json`:

* Wan 2.1 I2V (14B 480P/720P): one transformer plus a CLIP image encoder;
* Wan 2.2 I2V A14B: `transformer` (high noise) + `transformer_2` (low noise) switched
  at `boundary_ratio`;
* Wan 2.2 TI2V-5B: a 48-channel VAE with 16x spatial compression and
  `expand_timesteps` (sizes must be multiples of 32).

With no model configured the provider builds a tiny random-weight pipeline
(`providers.demo_models.ensure_demo_wan`) and runs the same code path.

Construction imports nothing heavy: torch and diffusers are imported in `load`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from providers.base import (
    FatalError,
    JobSpec,
    ModelInfo,
    OutputFile,
    ParamError,
    ParamSpec,
    Provider,
    RetryableError,
    RunContext,
    RunResult,
)
from providers.libraries import torchvision_works
from providers.registry import register

log = logging.getLogger(__name__)

# Pipelines loaded by this process (all instances). A worker loads its model once.
LOAD_COUNT = 0

LAYOUTS = {
    "wan2.1": "Wan 2.1 I2V",
    "wan2.2": "Wan 2.2 I2V A14B",
    "ti2v": "Wan 2.2 TI2V-5B",
}

# Nominal (landscape) size per resolution preset; its area is the pixel budget, near which the
# output takes the input's aspect ratio on the model's size grid (the input is cropped to it).
PRESET_SIZES: dict[str, tuple[int, int]] = {
    "demo": (64, 64),
    "480p": (832, 480),
    "720p": (1280, 720),
}
RESOLUTIONS: dict[str, int] = {name: w * h for name, (w, h) in PRESET_SIZES.items()}

DEFAULT_NEGATIVE_PROMPT = (
    "blurry, low quality, worst quality, jpeg artifacts, static, still frame, overexposed, "
    "subtitles, text, watermark, deformed, disfigured, extra fingers, messy background"
)

MIN_FRAMES = 5
MAX_FRAMES = 161
# diffusers' WanTransformer3DModel / AutoencoderKLWan defaults, for a checkpoint not on local disk.
DEFAULT_ROPE_MAX_SEQ_LEN = 1024
DEFAULT_PATCH_SIZE = (1, 2, 2)


@dataclass(frozen=True)
class WanLimits:
    """The largest video a checkpoint can run, derived from its config.

    The transformer's rotary embedding has `rope_max_seq_len` rows per latent axis: one per
    latent frame (`(num_frames - 1) / scale_t + 1`, over the temporal patch) and one per patch
    row / column (`side / (scale_s * patch)`). A larger grid fails inside diffusers with a raw
    `shape [...] is invalid` error, so the schema offers no more than this.
    """

    max_frames: int
    max_side: int

    @classmethod
    def from_config(cls, transformer: dict[str, Any], vae: dict[str, Any]) -> WanLimits:
        rope = int(transformer.get("rope_max_seq_len") or DEFAULT_ROPE_MAX_SEQ_LEN)
        p_t, p_h, p_w = (int(v) for v in transformer.get("patch_size") or DEFAULT_PATCH_SIZE)
        scale_t = int(vae.get("scale_factor_temporal") or 4)
        scale_s = int(vae.get("scale_factor_spatial") or 8)
        frames = min(MAX_FRAMES, (rope * p_t - 1) * scale_t + 1)
        return cls(max_frames=(frames - 1) // 4 * 4 + 1, max_side=rope * scale_s * min(p_h, p_w))

    def presets(self) -> list[str]:
        """The resolution presets whose nominal size fits, in either orientation."""
        return [name for name, (w, h) in PRESET_SIZES.items() if max(w, h) <= self.max_side]


def _component_config(source: str, *subfolders: str) -> dict[str, Any]:
    """The first `{subfolder}/config.json` of a local checkpoint directory; {} when there is none."""
    for sub in subfolders:
        path = Path(source) / sub / "config.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return {}


def config_limits(model: str | None, layout: str) -> WanLimits:
    """Limits from the config files alone (no torch): the demo builder's data, a local checkpoint's
    config.json files, else diffusers' defaults for the layout."""
    if model is None:
        from providers.demo_models import WAN_DEMO_TRANSFORMER, wan_demo_vae_config

        return WanLimits.from_config(WAN_DEMO_TRANSFORMER, wan_demo_vae_config(layout))
    vae = _component_config(model, "vae") or {"scale_factor_spatial": 16 if layout == "ti2v" else 8}
    return WanLimits.from_config(_component_config(model, "transformer", "transformer_2"), vae)


def detect_layout(model_index: dict[str, Any]) -> str:
    """The checkpoint layout from a diffusers `model_index.json` ("wan2.1", "wan2.2" or "ti2v")."""
    if model_index.get("expand_timesteps"):
        return "ti2v"
    second = model_index.get("transformer_2")
    if model_index.get("boundary_ratio") is not None and isinstance(second, list) and second and second[0]:
        return "wan2.2"
    return "wan2.1"


def guess_layout(model: str | None) -> str:
    """Best guess without loading anything: the local model_index.json, else the name."""
    if model:
        index = Path(model) / "model_index.json"
        if index.is_file():
            try:
                return detect_layout(json.loads(index.read_text()))
            except (OSError, ValueError):
                pass
        low = model.lower()
        if "ti2v" in low:
            return "ti2v"
        if "2.2" in low or "a14b" in low:
            return "wan2.2"
    return "wan2.1"


def grid_size(
    width: int, height: int, budget: int, multiple: int, max_side: int | None = None
) -> tuple[int, int]:
    """The video's (W, H): near `budget` pixels, both multiples of `multiple`, at most `max_side`,
    with the image's aspect ratio to within one grid step.

    diffusers' own Wan I2V recipe: height = sqrt(budget x ratio) down to the grid; the width then
    follows the ratio (rounded to the grid, so it is off by at most half a step). A side that would
    pass the model's rotary table is capped, and the other follows it.
    """
    ratio = height / width
    cap = max(multiple, (max_side or 1 << 30) // multiple * multiple)

    def on_grid(value: float) -> int:
        return max(multiple, min(cap, round(value / multiple) * multiple))

    # round() first: sqrt(399360 x 480/832) is 479.99..., which int() would take a grid step down.
    grid_h = max(multiple, min(cap, round(math.sqrt(budget * ratio)) // multiple * multiple))
    grid_w = on_grid(grid_h / ratio)
    if grid_w == cap:
        grid_h = on_grid(grid_w * ratio)
    elif grid_h == cap:
        grid_w = on_grid(grid_h / ratio)
    return grid_w, grid_h


def prepare_image(image, budget: int, multiple: int, max_side: int | None = None):
    """The conditioning frame: the image resized to cover the grid size and centre-cropped to it,
    never padded (black bars would be animated into every frame). Returns the frame and the crop
    box in the input's own pixels (what part of the photo the video shows)."""
    from PIL import Image

    grid_w, grid_h = grid_size(image.width, image.height, budget, multiple, max_side)
    scale = max(grid_w / image.width, grid_h / image.height)
    # The part of the input with the grid's aspect ratio, centred, in the input's pixels.
    crop_w, crop_h = min(image.width, grid_w / scale), min(image.height, grid_h / scale)
    left, top = (image.width - crop_w) / 2, (image.height - crop_h) / 2
    box = (left, top, left + crop_w, top + crop_h)
    frame = image.resize((grid_w, grid_h), Image.Resampling.LANCZOS, box=box)
    return frame, [round(v) for v in box]


GIB = 1 << 30
# What a run needs beside the resident weights: activations of a 720p x 81-frame denoising step
# plus the VAE decode's working set. Rough on purpose: an item that still runs out of memory is
# retried once with the next saver (`next_saver`), and the choice is recorded in its meta.
RUN_RESERVE_BYTES = 16 * GIB
# The VAE decode of 81 frames at 720p alone takes about this much untiled.
DECODE_RESERVE_BYTES = 8 * GIB


@dataclass(frozen=True)
class MemorySavers:
    """diffusers' memory savers a loaded pipeline runs with."""

    cpu_offload: bool = False  # each component moves to the GPU only while it runs
    vae_tiling: bool = False  # the VAE decodes the video in overlapping tiles

    def names(self) -> list[str]:
        return [name for name in ("cpu_offload", "vae_tiling") if getattr(self, name)]


def choose_savers(
    free_bytes: int | None,
    weight_bytes: int,
    largest_component_bytes: int,
    cpu_offload: bool | None = None,
    vae_tiling: bool | None = None,
) -> MemorySavers:
    """The savers a GPU with `free_bytes` free needs for a pipeline of `weight_bytes`; a configured
    value (True/False) wins over the estimate. `free_bytes` None: no accelerator (CPU), where
    offloading means nothing."""
    if free_bytes is None:
        return MemorySavers(False, bool(vae_tiling))
    offload = cpu_offload if cpu_offload is not None else weight_bytes + RUN_RESERVE_BYTES > free_bytes
    # With offload only the largest component is resident at a time.
    resident = largest_component_bytes if offload else weight_bytes
    tiling = (
        vae_tiling
        if vae_tiling is not None
        else free_bytes - resident < RUN_RESERVE_BYTES + DECODE_RESERVE_BYTES
    )
    return MemorySavers(offload, tiling)


def next_saver(
    savers: MemorySavers, resolution: str, presets: list[str], accelerator: bool
) -> tuple[str, MemorySavers, str] | None:
    """The next step of the out-of-memory ladder — offload, then VAE tiling, then the next lower
    resolution preset — as (what changed, savers, resolution); None when nothing is left."""
    if accelerator and not savers.cpu_offload:
        return "cpu_offload", MemorySavers(True, savers.vae_tiling), resolution
    if not savers.vae_tiling:
        return "vae_tiling", MemorySavers(savers.cpu_offload, True), resolution
    lower = [p for p in presets if RESOLUTIONS[p] < RESOLUTIONS.get(resolution, 0)]
    if lower:
        smaller = max(lower, key=RESOLUTIONS.__getitem__)
        return f"resolution {smaller}", savers, smaller
    return None


def _read_model_index(source: str) -> dict[str, Any]:
    path = Path(source) / "model_index.json"
    if not path.is_file():
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download(source, "model_index.json"))
    return json.loads(path.read_text())


class WanProvider(Provider):
    name = "wan_local"
    queue = "wan_local"
    gpu = True
    label = "WAN local"
    description = "Image-to-video with Wan 2.1 / 2.2 on this deployment's own GPUs (diffusers)."
    prompt_field = "prompt"
    # The UMT5 text encoder reads 512 tokens (diffusers' max_sequence_length) and cuts the rest
    # silently; 2,000 characters is about 512 tokens of English. Also the limit of negative_prompt.
    max_prompt_chars = 2000

    def __init__(
        self,
        model: str | None = None,
        *,
        demo_model_dir: str = "var/models",
        cpu_offload: bool | None = None,
        vae_tiling: bool | None = None,
        demo_layout: str = "wan2.1",
    ) -> None:
        self.model_ref = model
        self.demo = model is None
        self.demo_model_dir = demo_model_dir
        # Configured savers (None: chosen at load from the GPU's free memory and the model's size).
        self.cpu_offload = cpu_offload
        self.vae_tiling = vae_tiling
        self.savers = MemorySavers()
        self.demo_layout = demo_layout
        self.layout = demo_layout if self.demo else guess_layout(model)
        self.loads = 0
        self.device: str | None = None
        self.model_dir: str | None = None
        self._pipe = None
        self._multiple = 32 if self.layout == "ti2v" else 16
        # From the config files until `load`, then from the loaded model.
        self._limits: WanLimits | None = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings) -> WanProvider:
        return cls(
            settings.wan_model,
            demo_model_dir=settings.demo_model_dir,
            cpu_offload=settings.wan_cpu_offload,
            vae_tiling=settings.wan_vae_tiling,
        )

    # ----- description -------------------------------------------------------------

    def limits(self) -> WanLimits:
        """The largest frame count and canvas side the configured model runs."""
        if self._limits is None:
            self._limits = config_limits(self.model_ref, self.layout)
        return self._limits

    def models(self) -> list[ModelInfo]:
        if self.demo:
            label = "WAN image-to-video (tiny demo weights: output is noise)"
            seconds = 2.0
        else:
            label = f"{LAYOUTS[self.layout]} ({self.model_ref})"
            seconds = None
        return [
            ModelInfo(
                "wan_i2v",
                label,
                "Animates the input image following the prompt.",
                cost_per_item_usd=None,
                seconds_per_item=seconds,
                constraints={
                    "num_frames": "4k+1",
                    "max_frames": self.limits().max_frames,
                    "resolution": self.limits().presets(),
                    "layout": self.layout,
                },
            )
        ]

    def params(self, model: str) -> list[ParamSpec]:
        # The model cards' defaults: Wan 2.2 A14B guides both experts at 3.5 (Wan's i2v_A14B config).
        guidance = 3.5 if self.layout == "wan2.2" else 5.0
        if self.demo:
            resolution, frames, steps, fps = "demo", 9, 2, 8
        elif self.layout == "ti2v":
            resolution, frames, steps, fps = "720p", 121, 50, 24
        else:
            resolution = "720p" if "720p" in (self.model_ref or "").lower() else "480p"
            frames, steps, fps = 81, 40, 16
        limits = self.limits()
        presets = limits.presets()
        if resolution not in presets and presets:
            resolution = presets[-1]
        return [
            ParamSpec("negative_prompt", "str", DEFAULT_NEGATIVE_PROMPT, "what the video should avoid"),
            ParamSpec(
                "num_frames",
                "int",
                min(frames, limits.max_frames),
                "frames to generate; must be 4k+1 (e.g. 81)",
                MIN_FRAMES,
                limits.max_frames,
            ),
            ParamSpec(
                "resolution",
                "enum",
                resolution,
                "pixel budget; the video takes the input's aspect ratio (cropped to the size grid)",
                choices=presets,
            ),
            ParamSpec("steps", "int", steps, "denoising steps", 1, 100),
            ParamSpec(
                "guidance_scale",
                "float",
                guidance,
                "classifier-free guidance (1 = off)"
                + ("; of the high-noise expert" if self.layout == "wan2.2" else ""),
                0.0,
                20.0,
                advanced=True,
            ),
            *(
                [
                    ParamSpec(
                        "guidance_scale_2",
                        "float",
                        guidance,
                        "classifier-free guidance of the low-noise expert (the last steps)",
                        0.0,
                        20.0,
                        advanced=True,
                    )
                ]
                if self.layout == "wan2.2"
                else []
            ),
            ParamSpec(
                "seed", "int", None, "random seed (empty: a fresh one, recorded)", 0, 2**32 - 1, advanced=True
            ),
            ParamSpec("fps", "int", fps, "frames per second of the mp4", 1, 60, advanced=True),
        ]

    def check(self, spec: JobSpec) -> JobSpec:
        negative = spec.params.get("negative_prompt")
        if isinstance(negative, str) and len(negative) > self.max_prompt_chars:
            raise ParamError(
                "params.negative_prompt",
                f"negative_prompt is {len(negative)} characters; at most {self.max_prompt_chars}",
            )
        limits = self.limits()
        frames = spec.params.get("num_frames")
        if frames is not None and (frames - 1) % 4 != 0:
            lower = (frames - 1) // 4 * 4 + 1
            raise ParamError(
                "params.num_frames",
                f"num_frames must be 4k+1 (e.g. {lower} or {lower + 4}), not {frames}",
            )
        if frames is not None and not MIN_FRAMES <= frames <= limits.max_frames:
            raise ParamError(
                "params.num_frames",
                f"num_frames must be {MIN_FRAMES} to {limits.max_frames} for this model, not {frames}",
            )
        resolution = spec.params.get("resolution")
        if resolution is not None and resolution not in limits.presets():
            raise ParamError(
                "params.resolution",
                f"resolution must be one of {limits.presets()} for this model, not {resolution!r}",
            )
        return spec

    def work(self, params: dict[str, Any]) -> float:
        """Denoising is steps x latent tokens (frames x pixels); decoding the video, encoding the
        image and prompt, once per item, about one step more. Millions of pixel-frame-steps."""
        defaults = {p.name: p.default for p in self.params(self.default_model())}
        merged = {**defaults, **{k: v for k, v in (params or {}).items() if v is not None}}
        steps = int(merged.get("steps") or 1)
        frames = int(merged.get("num_frames") or MIN_FRAMES)
        pixels = RESOLUTIONS.get(str(merged.get("resolution")), RESOLUTIONS["480p"])
        return (steps + 1) * frames * pixels / 1e6

    # ----- loading -----------------------------------------------------------------

    def load(self, device: str) -> None:
        with self._load_lock:
            if self._pipe is not None:
                return
            self._load(device)

    def _load(self, device: str) -> None:
        global LOAD_COUNT
        started = time.monotonic()
        import torch
        from diffusers import WanImageToVideoPipeline

        if self.demo:
            from providers.demo_models import ensure_demo_wan

            source = ensure_demo_wan(self.demo_model_dir, self.demo_layout)
        else:
            source = str(self.model_ref)
        layout = detect_layout(_read_model_index(source))
        cuda = device.startswith("cuda")
        dtype = torch.bfloat16 if cuda else torch.float32
        kwargs: dict[str, Any] = {"dtype": dtype}
        if cuda:
            # The VAE (and Wan 2.1's CLIP image encoder) keep float32, as Wan recommends.
            from diffusers import AutoencoderKLWan

            kwargs["vae"] = AutoencoderKLWan.from_pretrained(source, subfolder="vae", dtype=torch.float32)
            if layout == "wan2.1":
                from transformers import CLIPVisionModel

                kwargs["image_encoder"] = CLIPVisionModel.from_pretrained(
                    source, subfolder="image_encoder", dtype=torch.float32
                )
        if layout == "wan2.1" and not torchvision_works():
            from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

            kwargs["image_processor"] = CLIPImageProcessorPil.from_pretrained(
                source, subfolder="image_processor"
            )
        pipe = WanImageToVideoPipeline.from_pretrained(source, **kwargs)
        sizes = [
            sum(p.numel() * p.element_size() for p in module.parameters())
            for module in pipe.components.values()
            if isinstance(module, torch.nn.Module)
        ]
        free = torch.cuda.mem_get_info(torch.device(device))[0] if cuda else None
        savers = choose_savers(free, sum(sizes), max(sizes), self.cpu_offload, self.vae_tiling)
        log.info(
            "wan weights %.1f GiB, %s free on %s: memory savers %s",
            sum(sizes) / GIB,
            "-" if free is None else f"{free / GIB:.1f} GiB",
            device,
            ", ".join(savers.names()) or "none",
        )
        if not savers.cpu_offload:
            pipe.to(device)
        self._apply(pipe, device, savers)
        pipe.set_progress_bar_config(disable=True)
        transformer_config = dict((pipe.transformer or pipe.transformer_2).config)
        patch = transformer_config["patch_size"]
        self._multiple = int(pipe.vae_scale_factor_spatial * patch[1])
        self._limits = WanLimits.from_config(
            transformer_config,
            {
                "scale_factor_temporal": pipe.vae_scale_factor_temporal,
                "scale_factor_spatial": pipe.vae_scale_factor_spatial,
            },
        )
        self._pipe = pipe
        self.layout = layout
        self.device = device
        self.model_dir = source
        self.loads += 1
        LOAD_COUNT += 1
        log.info(
            "loaded wan model %s (%s, %s) on %s in %.1f s",
            source,
            LAYOUTS[layout],
            str(dtype).removeprefix("torch."),
            device,
            time.monotonic() - started,
        )

    def _apply(self, pipe: Any, device: str, savers: MemorySavers) -> None:
        """Turn on the savers in `savers` that `pipe` does not run with yet (never off)."""
        if savers.cpu_offload and not self.savers.cpu_offload:
            # Moves every component back to the CPU first, then onto the device per call.
            pipe.enable_model_cpu_offload(device=device)
        if savers.vae_tiling and not self.savers.vae_tiling:
            pipe.vae.enable_tiling()
        self.savers = savers

    def _next_saver(self, resolution: str) -> tuple[str, MemorySavers, str] | None:
        accelerator = str(self.device).split(":")[0] not in ("cpu", "mps")
        # A real model never falls back to the demo preset's 64x64 thumbnail.
        presets = [p for p in self.limits().presets() if self.demo or p != "demo"]
        return next_saver(self.savers, resolution, presets, accelerator)

    def _default_device(self) -> str:
        import torch

        return "cuda:0" if torch.cuda.is_available() else "cpu"

    # ----- running -----------------------------------------------------------------

    def run(self, input_path: Path, spec: JobSpec, ctx: RunContext) -> RunResult:
        ctx.check_cancelled()
        if self._pipe is None:
            self.load(self._default_device())
        import torch
        from diffusers.utils import export_to_video
        from PIL import Image, ImageOps, UnidentifiedImageError

        try:
            # The loaded model may allow less than the submitting host read from its config.
            self.check(spec)
        except ParamError as exc:
            raise FatalError(f"{exc.field}: {exc.message}", code="bad_params") from exc
        p = spec.params
        num_frames = int(p.get("num_frames", 9))
        steps = int(p.get("steps", 2))
        fps = int(p.get("fps", 16))
        resolution = p.get("resolution", "480p")
        seed = p.get("seed")
        seed = int(seed) if seed is not None else secrets.randbelow(2**32)
        try:
            with Image.open(input_path) as opened:
                image = ImageOps.exif_transpose(opened).convert("RGB")
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise FatalError(f"cannot read the input image: {exc}", code="bad_input") from exc
        guidance: dict[str, float] = {"guidance_scale": float(p.get("guidance_scale", 5.0))}
        if self.layout == "wan2.2" and p.get("guidance_scale_2") is not None:
            guidance["guidance_scale_2"] = float(p["guidance_scale_2"])

        def on_step_end(pipe, i: int, t, callback_kwargs: dict) -> dict:
            ctx.report_progress(0.9 * (i + 1) / steps, f"step {i + 1}/{steps}")
            ctx.check_cancelled()
            if ctx.deadline is not None and time.time() > ctx.deadline:
                raise RetryableError("deadline passed during denoising", code="deadline")
            return {}

        pipe = self._pipe
        started = time.monotonic()
        oom_retry: dict[str, str] | None = None
        ctx.report_progress(0.0, "encoding prompt and image")
        with self._run_lock:
            while True:
                frame, box = prepare_image(
                    image, RESOLUTIONS[resolution], self._multiple, self.limits().max_side
                )
                try:
                    with torch.inference_mode():
                        out = pipe(
                            image=frame,
                            prompt=spec.prompt or "",
                            negative_prompt=p.get("negative_prompt") or None,
                            height=frame.height,
                            width=frame.width,
                            num_frames=num_frames,
                            num_inference_steps=steps,
                            generator=torch.Generator(device="cpu").manual_seed(seed),
                            output_type="np",
                            callback_on_step_end=on_step_end,
                            **guidance,
                        )
                    break
                except torch.OutOfMemoryError as exc:
                    pipe.maybe_free_model_hooks()
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
                    step = None if oom_retry else self._next_saver(resolution)
                    if step is None:
                        raise RetryableError(f"out of GPU memory: {exc}", code="oom") from exc
                    # Once per item, with the next saver on; the savers stay on for later items.
                    change, savers, resolution = step
                    log.warning(
                        "wan: out of memory at %s; retrying once with %s", p.get("resolution"), change
                    )
                    oom_retry = {"error": str(exc)[:200], "then": change}
                    self._apply(pipe, str(self.device), savers)
                    ctx.report_progress(0.0, f"out of memory: retrying with {change}")
                except BaseException:
                    pipe.maybe_free_model_hooks()
                    raise
        model_ms = (time.monotonic() - started) * 1000
        ctx.check_cancelled()

        frames = out.frames[0]
        ctx.report_progress(0.95, "encoding mp4")
        video = ctx.workdir / "video.mp4"
        partial = ctx.workdir / "video.partial.mp4"
        export_to_video(list(frames), str(partial), fps=fps)
        os.replace(partial, video)
        poster = ctx.workdir / "poster.png"
        first = (frames[0] * 255).round().clip(0, 255).astype("uint8")
        Image.fromarray(first).save(poster)
        ctx.report_progress(1.0, "done")
        return RunResult(
            outputs=[OutputFile(video, "video/mp4", "video"), OutputFile(poster, "image/png", "poster")],
            meta={
                "model": self.model_ref or "demo",
                "layout": self.layout,
                "device": self.device,
                # What this item was run with (a prompt per photo: the record says which).
                "prompt": spec.prompt or "",
                "negative_prompt": p.get("negative_prompt") or "",
                "seed": seed,
                "width": frame.width,
                "height": frame.height,
                "resolution": resolution,
                "input_crop": box,
                "memory_savers": self.savers.names(),
                **({"oom_retry": oom_retry} if oom_retry else {}),
                "num_frames": int(frames.shape[0]),
                "fps": fps,
                "steps": steps,
                "model_ms": round(model_ms, 1),
                "loads": self.loads,
            },
        )


register(WanProvider)
