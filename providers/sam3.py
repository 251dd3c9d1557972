"""SAM3 promptable concept segmentation (transformers `Sam3Model`).

One image, several text concepts: the vision features are computed once per image
and shared, uncopied, by its concepts, which are decoded one at a time.
Several items at once (`run_batch`): one vision-encoder pass for all their images,
then each image's own concepts against its slice of those features.
Outputs per concept a labelled instance mask (PNG, input size, pixel value =
instance label, 0 = background) and, where it found instances, a see-through
colour layer of them (RGBA PNG, preview size: the job page's per-concept toggles);
one JSON describing every instance, and a preview overlay. A concept's mask and
layer are written, and painted into the preview, as soon as the concept is
decoded and its tensors are dropped: memory holds one concept's masks at a time,
however many concepts a job has.

Pre-processing uses the official `Sam3Processor` where torchvision works (CUDA
hosts); otherwise the same steps are done here without torchvision: bilinear
(antialiased) resize to the model's square input size, rescale to [0, 1],
normalise with the processor's mean/std, text padded to 32 tokens.
Post-processing (score = sigmoid(logit) x sigmoid(presence), bilinear mask
upsampling, thresholding) is the processor's math, done one instance at a time so
large images with many instances stay within memory.
"""

from __future__ import annotations

import colorsys
import json
import logging
import re
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from providers.base import (
    BatchEntry,
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

# Models loaded by this process (all instances). A worker loads its model once.
LOAD_COUNT = 0

MAX_CONCEPTS = 64
MAX_CONCEPT_CHARS = 200
TEXT_LENGTH = 32
PREVIEW_MAX_SIDE = 1280
# How opaque a concept's layer paints its instances (the preview mixes 55 % colour in too).
LAYER_ALPHA = 140


def _config_file(source: str, name: str) -> Path | None:
    path = Path(source) / name
    if path.is_file():
        return path
    if Path(source).is_dir():
        return None
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(source, name))
    except Exception:
        return None


def slug(text: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return s[:40] or "concept"


class Sam3Provider(Provider):
    name = "sam3"
    queue = "sam3"
    gpu = True
    label = "SAM3 segmentation"
    description = "Finds every instance of each text concept and returns labelled masks (Meta SAM3)."
    prompt_field = "prompts"
    # Per concept: a concept is a short noun phrase and the text encoder reads TEXT_LENGTH (32)
    # tokens of it; 200 characters is several times that, so nothing a person means is refused.
    max_prompt_chars = MAX_CONCEPT_CHARS
    # Images whose vision features are computed in one call (each then decodes its own concepts).
    max_batch = 8

    def __init__(self, model: str | None = None, *, demo_model_dir: str = "var/models") -> None:
        self.model_ref = model
        self.demo = model is None
        self.demo_model_dir = demo_model_dir
        self.loads = 0
        self.device: str | None = None
        self.model_dir: str | None = None
        self.processor_kind: str | None = None
        self._model = None
        self._processor = None
        self._tokenizer = None
        self._image_size: tuple[int, int] = (1008, 1008)
        self._mean = [0.5, 0.5, 0.5]
        self._std = [0.5, 0.5, 0.5]
        self._rescale = 1 / 255
        self._dtype = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings) -> Sam3Provider:
        return cls(settings.sam3_model, demo_model_dir=settings.demo_model_dir)

    # ----- description -------------------------------------------------------------

    def models(self) -> list[ModelInfo]:
        label = "SAM3 (tiny demo weights: masks are noise)" if self.demo else f"SAM3 ({self.model_ref})"
        return [
            ModelInfo(
                "sam3",
                label,
                "Text-prompted instance segmentation; one mask per concept.",
                cost_per_item_usd=None,
                seconds_per_item=0.2 if self.demo else 0.1,
                constraints={"max_concepts": MAX_CONCEPTS},
            )
        ]

    def params(self, model: str) -> list[ParamSpec]:
        return [
            ParamSpec("score_threshold", "float", 0.5, "keep instances scoring above this", 0.0, 1.0),
            ParamSpec("mask_threshold", "float", 0.5, "mask probability cut-off", 0.0, 1.0, advanced=True),
        ]

    def check(self, spec: JobSpec) -> JobSpec:
        concepts = [c.strip() for c in spec.prompts if isinstance(c, str) and c.strip()]
        if not concepts:
            raise ParamError("prompts", "give at least one non-empty concept to segment")
        if len(concepts) > MAX_CONCEPTS:
            raise ParamError("prompts", f"at most {MAX_CONCEPTS} concepts per job, got {len(concepts)}")
        for c in concepts:
            if len(c) > MAX_CONCEPT_CHARS:
                raise ParamError(
                    "prompts", f"concept too long ({len(c)} characters, at most {MAX_CONCEPT_CHARS})"
                )
        return JobSpec(model=spec.model, prompt=spec.prompt, prompts=concepts, params=spec.params)

    # ----- loading -----------------------------------------------------------------

    def load(self, device: str) -> None:
        with self._load_lock:
            if self._model is not None:
                return
            self._load(device)

    def _load(self, device: str) -> None:
        global LOAD_COUNT
        started = time.monotonic()
        import torch
        from transformers import AutoTokenizer, Sam3Model

        if self.demo:
            from providers.demo_models import ensure_demo_sam3

            source = ensure_demo_sam3(self.demo_model_dir)
        else:
            source = str(self.model_ref)
        cuda = device.startswith("cuda")
        dtype = torch.bfloat16 if cuda else torch.float32
        model = Sam3Model.from_pretrained(source, dtype=dtype).to(device).eval()

        processor = None
        if torchvision_works():
            try:
                from transformers import Sam3Processor

                processor = Sam3Processor.from_pretrained(source)
                self._tokenizer = processor.tokenizer
            except Exception as exc:  # fall back to the built-in processing below
                log.warning(
                    "official Sam3Processor unavailable for %s (%s); using built-in processing", source, exc
                )
        if processor is None:
            self._tokenizer = AutoTokenizer.from_pretrained(source)
            size = model.config.vision_config.image_size
            height, width = (size, size) if isinstance(size, int) else tuple(size)
            pre = _config_file(source, "preprocessor_config.json")
            if pre is not None:
                cfg = json.loads(pre.read_text())
                if isinstance(cfg.get("size"), dict) and "height" in cfg["size"]:
                    height, width = int(cfg["size"]["height"]), int(cfg["size"]["width"])
                self._mean = list(cfg.get("image_mean") or self._mean)
                self._std = list(cfg.get("image_std") or self._std)
                self._rescale = float(cfg.get("rescale_factor") or self._rescale)
            self._image_size = (height, width)
        self._processor = processor
        self.processor_kind = "official" if processor is not None else "builtin"
        self._model = model
        self._dtype = dtype
        self.device = device
        self.model_dir = source
        self.loads += 1
        LOAD_COUNT += 1
        log.info(
            "loaded sam3 model %s (%s processing, %s) on %s in %.1f s",
            source,
            self.processor_kind,
            str(dtype).removeprefix("torch."),
            device,
            time.monotonic() - started,
        )

    def _default_device(self) -> str:
        import torch

        return "cuda:0" if torch.cuda.is_available() else "cpu"

    # ----- processing --------------------------------------------------------------

    def _pixel_values(self, image: Any) -> Any:
        """One image as a (1, 3, H, W) CPU float tensor at the model's input size."""
        import numpy as np
        import torch
        import torch.nn.functional as F

        if self._processor is not None:
            return self._processor(images=image, return_tensors="pt")["pixel_values"]
        t = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)[None].float()
        t = F.interpolate(t, size=self._image_size, mode="bilinear", align_corners=False, antialias=True)
        t = t.round().clamp(0, 255) * self._rescale
        mean = torch.tensor(self._mean).view(1, 3, 1, 1)
        std = torch.tensor(self._std).view(1, 3, 1, 1)
        return (t - mean) / std

    def _text_inputs(self, concepts: list[str]) -> tuple[Any, Any]:
        # As Sam3Processor does (padded to 32 tokens), plus truncation for long concepts.
        enc = self._tokenizer(
            concepts, padding="max_length", max_length=TEXT_LENGTH, truncation=True, return_tensors="pt"
        )
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    @staticmethod
    def _image_vision(vision: Any, index: int) -> Any:
        """Image `index`'s vision features, for one concept at a time (the decoder reads only the FPN maps).

        Slices are views of the batch's features. One concept per decoder call, because the mask decoder
        clones its input maps and builds full-resolution pixel embeddings per batch row: a batch of n
        concepts (even over expanded views) holds n copies of them at once.
        """
        return type(vision)(
            fpn_hidden_states=tuple(x[index : index + 1] for x in vision.fpn_hidden_states),
            fpn_position_encoding=tuple(x[index : index + 1] for x in vision.fpn_position_encoding),
        )

    def _instances(
        self, out: Any, index: int, size: tuple[int, int], threshold: float, mask_threshold: float
    ) -> _Found:
        """Kept instances of one batch row, best score first, painted into one label map."""
        import numpy as np
        import torch
        import torch.nn.functional as F

        height, width = size
        scores = out.pred_logits[index].float().sigmoid()
        if out.presence_logits is not None:
            scores = scores * out.presence_logits[index].float().sigmoid()
        boxes = out.pred_boxes[index].float() * torch.tensor(
            [width, height, width, height], device=scores.device
        )
        keep = torch.nonzero(scores > threshold).flatten().tolist()
        keep.sort(key=lambda q: -float(scores[q]))
        # One label map per concept instead of a mask per instance: memory stays at one byte a pixel.
        wide = len(keep) > 255
        labels = torch.zeros(size, dtype=torch.int32 if wide else torch.uint8, device=scores.device)
        # Paint the lowest score first so the best instance wins where they overlap.
        for label in range(len(keep), 0, -1):
            prob = out.pred_masks[index, keep[label - 1]].float().sigmoid()[None, None]
            prob = F.interpolate(prob, size=(height, width), mode="bilinear", align_corners=False)[0, 0]
            labels[prob > mask_threshold] = label
        return _Found(
            scores=[float(scores[q]) for q in keep],
            boxes=[[round(float(v), 2) for v in boxes[q].tolist()] for q in keep],
            labels=labels.cpu().numpy().astype(np.uint16 if wide else np.uint8),
        )

    # ----- running -----------------------------------------------------------------

    def run(self, input_path: Path, spec: JobSpec, ctx: RunContext) -> RunResult:
        (result,) = self.run_batch([BatchEntry(input_path, spec, ctx)])
        if isinstance(result, BaseException):
            raise result
        return result

    def run_batch(self, entries: list[BatchEntry]) -> list[RunResult | BaseException]:
        """Several images, each with its own concepts: one vision-encoder pass for all of them,
        then each image's concepts through the decoder. One entry's bad input, cancel or error
        stays in its slot; out of GPU memory fails every entry still running (RetryableError "oom")."""
        items = [_Item(entry) for entry in entries]
        for item in items:
            self._guarded(item, self._open)
        if any(item.result is None for item in items) and self._model is None:
            try:
                self.load(self._default_device())
            except Exception as exc:  # noqa: BLE001 - no model: every entry fails alike, as the worker expects
                return [item.result if item.result is not None else exc for item in items]
        for item in items:
            if item.result is None:
                self._guarded(item, self._prepare)
        live = [item for item in items if item.result is None]
        if live:
            self._infer(live)
        for item in items:
            if item.result is None:
                item.batch_size = len(entries)
                self._guarded(item, self._write)
            item.release()
        return [item.result for item in items]  # type: ignore[misc] - every slot is set by now

    @staticmethod
    def _guarded(item: _Item, step: Callable[[_Item], RunResult | None]) -> None:
        """Run one entry's step; its exception becomes that entry's result and touches no other entry."""
        try:
            result = step(item)
        except Exception as exc:  # noqa: BLE001 - handed back per entry, as the contract says
            item.fail(exc)
        else:
            if result is not None:
                item.result = result

    def _open(self, item: _Item) -> None:
        """Cancel check, spec check and image decoding: everything that needs no model."""
        from PIL import Image, ImageOps, UnidentifiedImageError

        item.ctx.check_cancelled()
        spec = self.check(item.entry.spec)
        item.concepts = spec.prompts
        item.threshold = float(spec.params.get("score_threshold", 0.5))
        item.mask_threshold = float(spec.params.get("mask_threshold", 0.5))
        try:
            with Image.open(item.entry.input_path) as opened:
                item.image = ImageOps.exif_transpose(opened).convert("RGB")
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise FatalError(f"cannot read the input image: {exc}", code="bad_input") from exc

    def _prepare(self, item: _Item) -> None:
        item.pixels = self._pixel_values(item.image)

    def _infer(self, live: list[_Item]) -> None:
        """The GPU part for every live entry, under the run lock; out of memory fails them all."""
        import torch

        oom: str | None = None
        with self._run_lock:
            try:
                self._encode_and_decode(live)
            except torch.OutOfMemoryError as exc:
                oom = str(exc)
            except Exception as exc:  # noqa: BLE001 - the shared vision pass failed: every live entry with it
                for item in live:
                    if item.result is None:
                        item.fail(exc)
            if oom is not None:
                # Outside the except block the failed pass's tensors are unreferenced: free them now.
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                # Entries already cancelled or failed keep that outcome; a retry would not change it.
                for item in live:
                    if item.result is None:
                        item.fail(RetryableError(f"out of GPU memory: {oom}", code="oom"))

    def _encode_and_decode(self, live: list[_Item]) -> None:
        """Vision features of all images in one call, then each image's concepts on its slice."""
        import torch

        with torch.inference_mode():
            started = time.monotonic()
            pixels = torch.cat([item.pixels for item in live]).to(self.device, dtype=self._dtype)
            vision = self._model.get_vision_features(pixel_values=pixels)
            del pixels
            vision_ms = (time.monotonic() - started) * 1000
            for index, item in enumerate(live):
                item.vision_ms = vision_ms
                # Each image is charged its share of the shared vision pass.
                item.inference_ms = vision_ms / len(live)
                try:
                    self._decode(item, vision, index)
                except torch.OutOfMemoryError:
                    raise  # not this entry's fault: the whole batch goes back (see _infer)
                except Exception as exc:  # noqa: BLE001 - this entry's cancel or failure only
                    item.fail(exc)

    def _decode(self, item: _Item, vision: Any, index: int) -> None:
        """One image's concepts, one at a time, against its slice of the batch's features; each
        concept's mask is written as soon as it is decoded, then the preview once all are."""
        import numpy as np

        ctx = item.ctx
        ctx.report_progress(0.3, "image encoded")
        size = (item.image.height, item.image.width)
        features = self._image_vision(vision, index)
        item.overlay = np.asarray(item.image, dtype=np.float32).copy()
        concepts = item.concepts
        for ci, concept in enumerate(concepts):
            ctx.check_cancelled()
            started = time.monotonic()
            ids, mask = self._text_inputs([concept])
            out = self._model(vision_embeds=features, input_ids=ids, attention_mask=mask)
            found = self._instances(out, 0, size, item.threshold, item.mask_threshold)
            # The concept's raw masks (queries x mask size) go before the next concept is decoded.
            del out
            item.inference_ms += (time.monotonic() - started) * 1000
            self._write_concept(item, ci, concept, found)
            done = ci + 1
            ctx.report_progress(0.3 + 0.6 * done / len(concepts), f"{done}/{len(concepts)} concepts")
        self._write_preview(item)

    def _write_concept(self, item: _Item, ci: int, concept: str, found: _Found) -> None:
        """One concept's label PNG into the entry's workdir, its instances noted, its masks painted."""
        import numpy as np
        from PIL import Image

        role = f"mask_{slug(concept)}"
        if role in item.roles:
            role = f"{role}_{ci}"
        item.roles.add(role)
        labels = found.labels
        path = item.ctx.workdir / f"{role}.png"
        item.written.append(path)
        Image.fromarray(labels).save(path)
        item.masks.append(OutputFile(path, "image/png", role))
        for label, (score, box) in enumerate(zip(found.scores, found.boxes, strict=True), start=1):
            item.instances.append(
                {
                    "concept": concept,
                    "concept_index": ci,
                    "label": label,
                    "mask_role": role,
                    "score": round(score, 5),
                    "box": box,
                    "area": int((labels == label).sum()),
                }
            )
        count = len(found.scores)
        # The concept alone, as a see-through layer (where it found anything): the job page stacks
        # the layers over the input and shows or hides each concept. Painted with the preview.
        layer = np.zeros((*labels.shape, 4), dtype=np.uint8) if count else None
        overlay = item.overlay
        for label in range(1, count + 1):
            rgb = _colour(ci, label)
            sel = labels == label
            overlay[sel] = overlay[sel] * 0.45 + np.array(rgb, dtype=np.float32) * 0.55
            layer[sel] = (*rgb, LAYER_ALPHA)
        layer_role = None
        if layer is not None:
            layer_role = "layer_" + role.removeprefix("mask_")
            image = Image.fromarray(layer, "RGBA")
            del layer
            if max(image.size) > PREVIEW_MAX_SIDE:
                image.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE))
            layer_path = item.ctx.workdir / f"{layer_role}.png"
            item.written.append(layer_path)
            image.save(layer_path)
            item.masks.append(OutputFile(layer_path, "image/png", layer_role))
        item.summary.append(
            {
                "concept": concept,
                "role": role,
                "file": path.name,
                "instances": count,
                "layer_role": layer_role,
                "colour": "#{:02x}{:02x}{:02x}".format(*_colour(ci, 1)),
            }
        )

    def _write_preview(self, item: _Item) -> None:
        """The overlay of every concept's instances on the input, as a PNG; the overlay is dropped."""
        import numpy as np
        from PIL import Image

        preview = Image.fromarray(item.overlay.round().clip(0, 255).astype(np.uint8))
        item.overlay = None
        if max(preview.size) > PREVIEW_MAX_SIDE:
            preview.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE))
        path = item.ctx.workdir / "preview.png"
        item.written.append(path)
        preview.save(path)
        item.preview = OutputFile(path, "image/png", "preview")

    def _write(self, item: _Item) -> RunResult:
        """One entry's instances JSON (its masks and preview are written by now) and its result."""
        ctx = item.ctx
        ctx.check_cancelled()
        image = item.image
        report = {
            "image": {"width": image.width, "height": image.height},
            "model": self.model_ref or "demo",
            "processor": self.processor_kind,
            "score_threshold": item.threshold,
            "mask_threshold": item.mask_threshold,
            "concepts": item.summary,
            "instances": item.instances,
            "inference_ms": round(item.inference_ms, 1),
            # The vision pass covered the whole batch.
            "vision_ms": round(item.vision_ms, 1),
            "batch_size": item.batch_size,
        }
        json_path = ctx.workdir / "instances.json"
        item.written.append(json_path)
        json_path.write_text(json.dumps(report, indent=2) + "\n")
        assert item.preview is not None  # written by _decode, the step before this one
        outputs = [*item.masks, OutputFile(json_path, "application/json", "instances"), item.preview]
        ctx.report_progress(1.0, "done")
        return RunResult(
            outputs=outputs,
            meta={
                "model": self.model_ref or "demo",
                "device": self.device,
                "instances": len(item.instances),
                "concepts": len(item.concepts),
                # Per concept, in order: its instance count, colour, mask and layer outputs (the job page's legend).
                "legend": [
                    {k: c[k] for k in ("concept", "instances", "colour", "role", "layer_role")}
                    for c in item.summary
                ],
                "prompts": list(item.concepts),
                "inference_ms": round(item.inference_ms, 1),
                "batch_size": item.batch_size,
                "loads": self.loads,
            },
        )


@dataclass
class _Found:
    """One concept's kept instances on one image: scores and boxes best first, and the label map
    (input size, pixel value = 1-based rank, 0 = background)."""

    scores: list[float]
    boxes: list[list[float]]
    labels: Any


@dataclass
class _Item:
    """One batch entry on its way through run_batch; `result` set means it is finished."""

    entry: BatchEntry
    result: RunResult | BaseException | None = None
    concepts: list[str] = field(default_factory=list)
    threshold: float = 0.5
    mask_threshold: float = 0.5
    image: Any = None
    pixels: Any = None
    # The preview being painted (float, input size), one concept after another.
    overlay: Any = None
    # What is written so far: mask files in concept order, their instances and summaries, the preview.
    masks: list[OutputFile] = field(default_factory=list)
    instances: list[dict[str, Any]] = field(default_factory=list)
    summary: list[dict[str, Any]] = field(default_factory=list)
    roles: set[str] = field(default_factory=set)
    preview: OutputFile | None = None
    written: list[Path] = field(default_factory=list)
    vision_ms: float = 0.0
    inference_ms: float = 0.0
    batch_size: int = 1

    @property
    def ctx(self) -> RunContext:
        return self.entry.ctx

    def fail(self, exc: BaseException) -> None:
        # The traceback's finished frames would keep the batch's GPU tensors alive while the worker holds it.
        traceback.clear_frames(exc.__traceback__)
        self.result = exc
        # Outputs are written as they are produced: a failed or cancelled entry leaves none of them behind.
        for path in self.written:
            path.unlink(missing_ok=True)
        self.written = []

    def release(self) -> None:
        # Images, tensors and overlays of a whole batch add up: drop them once the entry is done.
        self.image = self.pixels = self.overlay = None


def _colour(concept_index: int, label: int) -> tuple[int, int, int]:
    hue = (concept_index * 0.61803398875) % 1.0
    value = 1.0 - 0.5 * ((label - 1) % 4) / 4
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, value)
    return int(r * 255), int(g * 255), int(b * 255)


register(Sam3Provider)
