"""Diagnostic provider: copies the input to the output.

Used by system tests, benchmarks and operators checking that a new host receives
work. `queue` sends its items to any provider queue so every worker can be reached.
Off unless the settings enable it (production offers it only where ENABLE_ECHO_PROVIDER says).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from providers.base import (
    FatalError,
    JobSpec,
    ModelInfo,
    ParamSpec,
    Provider,
    RetryableError,
    RunContext,
    RunResult,
)
from providers.base import OutputFile as Output
from providers.registry import register, registered_queues


class EchoProvider(Provider):
    name = "echo"
    queue = "wan_local"
    label = "Echo (diagnostic)"
    description = "Copies each input to the output. For checking workers and measuring the pipeline."
    demo = True
    prompt_field = None
    # Echo reads no prompt, but one sent is stored and shown; it stands in for WAN (its default queue)
    # in tests and benchmarks, so it takes what WAN takes.
    max_prompt_chars = 2000
    # Lets the worker's micro-batching be exercised without a model (run_batch runs them in turn).
    max_batch = 8

    def __init__(self, load_delay_s: float = 0.0, load_error: str | None = None) -> None:
        # A model load to rehearse with: as slow as a real one, or failing as a broken one does.
        self.load_delay_s = load_delay_s
        self.load_error = load_error

    @classmethod
    def enabled(cls, settings: Any) -> bool:
        return bool(settings.enable_echo)

    @classmethod
    def from_settings(cls, settings: Any) -> EchoProvider:
        return cls(settings.echo_load_delay_s, settings.echo_load_error)

    def load(self, device: str) -> None:
        time.sleep(self.load_delay_s)
        if self.load_error:
            raise RuntimeError(f"diagnostic model load failed: {self.load_error}")

    def models(self) -> list[ModelInfo]:
        return [ModelInfo("echo", "Echo", "copies the input", cost_per_item_usd=0.0, seconds_per_item=0.0)]

    def params(self, model: str) -> list[ParamSpec]:
        return [
            ParamSpec(
                "delay_s", "float", 0.0, "seconds to spend per item, in steps of at most 0.1 s", 0, 3600
            ),
            ParamSpec(
                "fail",
                "enum",
                "none",
                "inject a failure: 'retryable' (every attempt), 'fatal', 'first_attempt' (retryable, then "
                "succeed), 'crash' (an untyped exception, as a model bug would raise), 'oom' / "
                "'oom_first_attempt' (torch's out-of-memory error, as CUDA raises it)",
                choices=["none", "retryable", "fatal", "first_attempt", "crash", "oom", "oom_first_attempt"],
            ),
            ParamSpec(
                "queue",
                "enum",
                self.queue,
                "queue to run on; 'spread' deals items round-robin over every provider queue",
                choices=[*registered_queues(), "spread"],
            ),
        ]

    def queue_for(self, spec: JobSpec, index: int = 0) -> str:
        queue = str(spec.params.get("queue") or self.queue)
        if queue != "spread":
            return queue
        queues = registered_queues()
        return queues[index % len(queues)]

    def run(self, input_path: Path, spec: JobSpec, ctx: RunContext) -> RunResult:
        delay = float(spec.params.get("delay_s", 0.0))
        fail = spec.params.get("fail", "none")
        started = time.monotonic()
        steps = max(1, int(delay / 0.1 + 0.999)) if delay > 0 else 0
        for step in range(steps):
            ctx.check_cancelled()
            time.sleep(min(0.1, delay - step * 0.1))
            ctx.report_progress((step + 1) / steps, None)
        ctx.check_cancelled()
        if fail == "fatal":
            raise FatalError("injected fatal failure", code="injected")
        if fail == "retryable" or (fail == "first_attempt" and ctx.attempt == 1):
            raise RetryableError("injected retryable failure", code="injected")
        if fail == "crash":
            raise RuntimeError("injected crash inside the model")
        if fail == "oom" or (fail == "oom_first_attempt" and ctx.attempt == 1):
            import torch

            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected)")
        _check_image(input_path)
        out = ctx.workdir / ("echo" + input_path.suffix)
        shutil.copyfile(input_path, out)
        return RunResult(
            outputs=[Output(out, _content_type(input_path), "echo")],
            # What it was given, as a model would record it (per-image prompts are checked by it).
            meta={
                "model_ms": round((time.monotonic() - started) * 1000, 3),
                "prompt": spec.prompt,
                "prompts": list(spec.prompts),
            },
        )


def _content_type(path: Path) -> str:
    return {
        ".png": "image/png",
        ".jpg": "image/jpeg",
        ".jpeg": "image/jpeg",
        ".webp": "image/webp",
        ".gif": "image/gif",
    }.get(path.suffix.lower(), "application/octet-stream")


def _check_image(path: Path) -> None:
    """Like a real provider, refuse an input that does not decode: that never gets better on retry."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise FatalError(f"the input image is corrupt or truncated: {exc}", code="corrupt_input") from exc


register(EchoProvider)
