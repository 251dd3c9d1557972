"""A provider defined only in the tests: the whole of what adding a provider takes.

Enabled with BULKGEN_PROVIDERS=tests.plugins.upper in every process (web, control, workers). It
mirrors the image and writes the prompt in capitals, on a queue of its own (`upper`).
"""

from __future__ import annotations

from pathlib import Path

from providers.base import JobSpec, ModelInfo, OutputFile, ParamSpec, Provider, RunContext, RunResult
from providers.registry import register


class UpperProvider(Provider):
    name = "upper"
    queue = "upper"
    label = "Upper (test plugin)"
    description = "Mirrors the image and writes the prompt in capitals."
    demo = True
    worker_pool = "threads"
    worker_concurrency = 2

    def models(self) -> list[ModelInfo]:
        return [ModelInfo("upper-1", "Upper", "mirror and capitals", cost_per_item_usd=0.0)]

    def params(self, model: str) -> list[ParamSpec]:
        return [ParamSpec("repeat", "int", 1, "times the capitalised prompt is written", 1, 5)]

    def run(self, input_path: Path, spec: JobSpec, ctx: RunContext) -> RunResult:
        from PIL import Image, ImageOps

        ctx.check_cancelled()
        mirrored = ctx.workdir / "mirrored.png"
        with Image.open(input_path) as img:
            ImageOps.mirror(img.convert("RGB")).save(mirrored)
        caption = ctx.workdir / "caption.txt"
        caption.write_text("\n".join([(spec.prompt or "").upper()] * spec.params["repeat"]))
        ctx.report_progress(1.0, None)
        return RunResult(
            outputs=[
                OutputFile(mirrored, "image/png", "image"),
                OutputFile(caption, "text/plain", "caption"),
            ],
            meta={"prompt": spec.prompt},
        )


register(UpperProvider)
