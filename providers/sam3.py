"""SAM3 promptable concept segmentation (transformers `Sam3Model`).

One image, several text concepts: the vision features are computed once per image
and reused for every concept (one batched decoder pass per chunk of concepts).
Outputs per concept a labelled instance mask (PNG, input size, pixel value =
instance label, 0 = background), one JSON describing every instance, and a
preview overlay.

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
import importlib.util
import json
import logging
import re
import threading
import time
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

log = logging.getLogger(__name__)

# Models loaded by this process (all instances). A worker loads its model once.
LOAD_COUNT = 0

MAX_CONCEPTS = 64
MAX_CONCEPT_CHARS = 200
TEXT_LENGTH = 32
# Concepts decoded together against one set of vision features.
CONCEPT_BATCH = 8
PREVIEW_MAX_SIDE = 1280


def _torchvision_works() -> bool:
    if importlib.util.find_spec("torchvision") is None:
        return False
    try:
        import torch
        import torchvision  # noqa: F401

        torch.ops.torchvision.nms  # noqa: B018 - raises when the compiled ops are missing
        return True
    except Exception:
        return False


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
    label = "SAM3 segmentation"
    description = "Finds every instance of each text concept and returns labelled masks (Meta SAM3)."
    prompt_field = "prompts"

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
        if _torchvision_works():
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

    def _pixel_values(self, image):
        import numpy as np
        import torch
        import torch.nn.functional as F

        if self._processor is not None:
            pv = self._processor(images=image, return_tensors="pt")["pixel_values"]
        else:
            t = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)[None].float()
            t = F.interpolate(t, size=self._image_size, mode="bilinear", align_corners=False, antialias=True)
            t = t.round().clamp(0, 255) * self._rescale
            mean = torch.tensor(self._mean).view(1, 3, 1, 1)
            std = torch.tensor(self._std).view(1, 3, 1, 1)
            pv = (t - mean) / std
        return pv.to(self.device, dtype=self._dtype)

    def _text_inputs(self, concepts: list[str]):
        # As Sam3Processor does (padded to 32 tokens), plus truncation for long concepts.
        enc = self._tokenizer(
            concepts, padding="max_length", max_length=TEXT_LENGTH, truncation=True, return_tensors="pt"
        )
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    @staticmethod
    def _repeat_vision(vision, n: int):
        """The image's vision features for a batch of n concepts (the decoder reads only the FPN maps)."""
        if n == 1:
            return vision
        return type(vision)(
            fpn_hidden_states=tuple(x.repeat(n, 1, 1, 1) for x in vision.fpn_hidden_states),
            fpn_position_encoding=tuple(x.repeat(n, 1, 1, 1) for x in vision.fpn_position_encoding),
        )

    def _instances(self, out, index: int, size: tuple[int, int], threshold: float, mask_threshold: float):
        """Kept instances of one batch row, best score first: [(score, box, bool mask HxW)]."""
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
        found = []
        for q in keep:
            prob = out.pred_masks[index, q].float().sigmoid()[None, None]
            prob = F.interpolate(prob, size=(height, width), mode="bilinear", align_corners=False)[0, 0]
            found.append(
                (
                    float(scores[q]),
                    [round(float(v), 2) for v in boxes[q].tolist()],
                    (prob > mask_threshold).cpu(),
                )
            )
        return found

    # ----- running -----------------------------------------------------------------

    def run(self, input_path: Path, spec: JobSpec, ctx: RunContext) -> RunResult:
        ctx.check_cancelled()
        spec = self.check(spec)
        if self._model is None:
            self.load(self._default_device())
        import numpy as np
        import torch
        from PIL import Image, ImageOps, UnidentifiedImageError

        threshold = float(spec.params.get("score_threshold", 0.5))
        mask_threshold = float(spec.params.get("mask_threshold", 0.5))
        try:
            with Image.open(input_path) as opened:
                image = ImageOps.exif_transpose(opened).convert("RGB")
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise FatalError(f"cannot read the input image: {exc}", code="bad_input") from exc
        size = (image.height, image.width)
        concepts = spec.prompts
        model = self._model
        per_concept: list[list[tuple[float, list[float], Any]]] = []
        started = time.monotonic()
        with self._run_lock:
            try:
                with torch.inference_mode():
                    vision = model.get_vision_features(pixel_values=self._pixel_values(image))
                    vision_ms = (time.monotonic() - started) * 1000
                    ctx.report_progress(0.3, "image encoded")
                    for start in range(0, len(concepts), CONCEPT_BATCH):
                        ctx.check_cancelled()
                        chunk = concepts[start : start + CONCEPT_BATCH]
                        ids, mask = self._text_inputs(chunk)
                        out = model(
                            vision_embeds=self._repeat_vision(vision, len(chunk)),
                            input_ids=ids,
                            attention_mask=mask,
                        )
                        for row in range(len(chunk)):
                            per_concept.append(self._instances(out, row, size, threshold, mask_threshold))
                        done = start + len(chunk)
                        ctx.report_progress(
                            0.3 + 0.6 * done / len(concepts), f"{done}/{len(concepts)} concepts"
                        )
            except torch.OutOfMemoryError as exc:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                raise RetryableError(f"out of GPU memory: {exc}", code="oom") from exc
        inference_ms = (time.monotonic() - started) * 1000

        outputs: list[OutputFile] = []
        instances: list[dict[str, Any]] = []
        summary: list[dict[str, Any]] = []
        used: set[str] = set()
        overlay = np.asarray(image, dtype=np.float32).copy()
        for ci, (concept, found) in enumerate(zip(concepts, per_concept, strict=True)):
            role = f"mask_{slug(concept)}"
            if role in used:
                role = f"{role}_{ci}"
            used.add(role)
            dtype = np.uint8 if len(found) <= 255 else np.uint16
            labels = np.zeros(size, dtype=dtype)
            # Paint the lowest score first so the best instance wins where they overlap.
            for label in range(len(found), 0, -1):
                labels[found[label - 1][2].numpy()] = label
            path = ctx.workdir / f"{role}.png"
            Image.fromarray(labels).save(path)
            outputs.append(OutputFile(path, "image/png", role))
            for label, (score, box, _) in enumerate(found, start=1):
                instances.append(
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
            summary.append({"concept": concept, "role": role, "file": path.name, "instances": len(found)})
            for label in range(1, len(found) + 1):
                colour = np.array(_colour(ci, label), dtype=np.float32)
                sel = labels == label
                overlay[sel] = overlay[sel] * 0.45 + colour * 0.55

        preview = Image.fromarray(overlay.round().clip(0, 255).astype(np.uint8))
        if max(preview.size) > PREVIEW_MAX_SIDE:
            preview.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE))
        preview_path = ctx.workdir / "preview.png"
        preview.save(preview_path)

        report = {
            "image": {"width": image.width, "height": image.height},
            "model": self.model_ref or "demo",
            "processor": self.processor_kind,
            "score_threshold": threshold,
            "mask_threshold": mask_threshold,
            "concepts": summary,
            "instances": instances,
            "inference_ms": round(inference_ms, 1),
            "vision_ms": round(vision_ms, 1),
        }
        json_path = ctx.workdir / "instances.json"
        json_path.write_text(json.dumps(report, indent=2) + "\n")
        outputs.append(OutputFile(json_path, "application/json", "instances"))
        outputs.append(OutputFile(preview_path, "image/png", "preview"))
        ctx.report_progress(1.0, "done")
        return RunResult(
            outputs=outputs,
            meta={
                "model": self.model_ref or "demo",
                "device": self.device,
                "instances": len(instances),
                "concepts": len(concepts),
                "inference_ms": round(inference_ms, 1),
                "loads": self.loads,
            },
        )


def _colour(concept_index: int, label: int) -> tuple[int, int, int]:
    hue = (concept_index * 0.61803398875) % 1.0
    value = 1.0 - 0.5 * ((label - 1) % 4) / 4
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, value)
    return int(r * 255), int(g * 255), int(b * 255)
