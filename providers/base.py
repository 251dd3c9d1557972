"""The contract every provider implements.

A provider turns one input image into result files. It imports nothing of this
project: the worker hands it explicit arguments (a local input path, validated
parameters, a run context) and uploads whatever files it returns.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ProviderError(Exception):
    """A run failed. `retryable` says whether another attempt may succeed."""

    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None, code: str | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable
        self.code = code


class RetryableError(ProviderError):
    """Transient trouble (remote 5xx, out of memory, storage hiccup): try again."""

    retryable = True


class FatalError(ProviderError):
    """The input or the model cannot succeed (corrupt image, rejected prompt): never retry."""

    retryable = False


class Cancelled(Exception):
    """Raised from inside a run when the item was cancelled; the worker records `cancelled`."""


class ParamError(ValueError):
    """Invalid job parameters, caught at submission. `field` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class ModelInfo:
    """One model a provider offers (Runway offers several on one queue)."""

    name: str
    label: str
    description: str = ""
    # Rough figures for the admin's choice; None where unknown.
    cost_per_item_usd: float | None = None
    seconds_per_item: float | None = None
    # Per-model constraints, e.g. {"ratio": [...], "duration": [...]} for Runway.
    constraints: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ParamSpec:
    """One tunable parameter, described for the API's schema and the web form."""

    name: str
    type: str  # "int" | "float" | "str" | "bool" | "enum" | "list[str]"
    default: Any = None
    description: str = ""
    minimum: float | None = None
    maximum: float | None = None
    choices: list[Any] | None = None
    advanced: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class JobSpec:
    """What the admin asked for, as validated at submission."""

    model: str
    prompt: str | None
    prompts: list[str]
    params: dict[str, Any]


@dataclass
class OutputFile:
    """A file the provider wrote into the work directory, to be uploaded."""

    path: Path
    content_type: str
    # Short role name used in the storage key and the UI: "video", "poster", "mask_cat", ...
    role: str


@dataclass
class RunResult:
    outputs: list[OutputFile]
    # Small JSON-able facts recorded with the item: remote task id, cost, timings.
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunContext:
    """What the worker lends a run.

    `report_progress(fraction, message)` publishes progress (fraction in 0..1).
    `check_cancelled()` raises `Cancelled` if the admin cancelled; call it between steps.
    `remember(key, value)` / `recall(key)` keep small strings for this item *and attempt*
    across redeliveries (e.g. a remote task id, so a redelivered message resumes polling
    instead of creating a second remote task).
    """

    item_id: str
    attempt: int
    workdir: Path
    report_progress: Callable[[float, str | None], None]
    check_cancelled: Callable[[], None]
    remember: Callable[[str, str], None]
    recall: Callable[[str], str | None]
    # Absolute time.time() after which the run should give up with a RetryableError.
    deadline: float | None = None
    # Signed, short-lived URL of the input, for providers that fetch remotely (Runway).
    input_url: str | None = None


@dataclass(frozen=True)
class BatchEntry:
    """One item of a batched call."""

    input_path: Path
    spec: JobSpec
    ctx: RunContext


class Provider(abc.ABC):
    """Base class. Subclasses set the class attributes and implement `validate` / `load` / `run`.

    Construction must be cheap and must not import torch: the web host builds every
    provider to validate submissions and describe them. `load` runs once per worker
    process (after fork), `run` once per item.
    """

    name: str
    queue: str
    label: str = ""
    description: str = ""
    # True where the provider runs demo weights or a simulated remote service.
    demo: bool = False
    # Job field the provider needs: "prompt" (text), "prompts" (list of concepts) or None.
    prompt_field: str | None = "prompt"
    # Most items `run_batch` takes in one call; the worker batches up to min(this, its batch size).
    max_batch: int = 1
    # Longest prompt (and longest concept of `prompts`) taken at submission, in characters. Each
    # provider sets its own from what its model or API reads; this default is Runway's documented limit.
    max_prompt_chars: int = 1000
    # Items run on a GPU: a worker that consumes only GPU queues runs one lane per device.
    gpu: bool = False
    # Each run costs money: its estimated cost (`cost`) counts against the daily spending cap.
    billed: bool = False
    # Its figures (times, costs) come from a simulated service, not the real one.
    simulated: bool = False
    # How a worker of this queue runs: its Celery pool and concurrency (None: the worker's own choice;
    # GPU queues run lanes), and the environment variables only this queue's workers may hold.
    worker_pool: str | None = None
    worker_concurrency: int | None = None
    secret_env: tuple[str, ...] = ()

    @classmethod
    def enabled(cls, settings: Any) -> bool:
        """Whether this deployment offers the provider (`settings`: the registry's ProviderSettings).
        Heavy libraries are the workers' business (imported in `load`): do not check them here, or a
        web host without torch could not take the provider's jobs."""
        return True

    @classmethod
    def from_settings(cls, settings: Any) -> Provider:
        return cls()

    @abc.abstractmethod
    def models(self) -> list[ModelInfo]: ...

    @abc.abstractmethod
    def params(self, model: str) -> list[ParamSpec]: ...

    def default_model(self) -> str:
        return self.models()[0].name

    def queue_for(self, spec: JobSpec, index: int = 0) -> str:
        """The queue item number `index` of this job goes to (the diagnostic provider can pick any)."""
        return self.queue

    def validate(
        self, model: str | None, prompt: str | None, prompts: list[str] | None, params: dict[str, Any]
    ) -> JobSpec:
        """Check a submission and fill defaults. Raises ParamError naming the field."""
        from providers.params import validate_params

        names = [m.name for m in self.models()]
        model = model or self.default_model()
        if model not in names:
            raise ParamError(
                "model", f"unknown model {model!r} for provider {self.name!r}; choose one of {names}"
            )
        clean = validate_params(self.params(model), params or {})
        if prompt is not None and len(prompt) > self.max_prompt_chars:
            raise ParamError(
                "prompt",
                f"prompt is {len(prompt)} characters; {self.name} takes at most {self.max_prompt_chars}",
            )
        for concept in prompts or []:
            if isinstance(concept, str) and len(concept) > self.max_prompt_chars:
                raise ParamError(
                    "prompts",
                    f"a concept is {len(concept)} characters; {self.name} takes at most "
                    f"{self.max_prompt_chars} per concept",
                )
        prompt = (prompt or "").strip() or None
        concepts = [p.strip() for p in (prompts or []) if isinstance(p, str) and p.strip()]
        if self.prompt_field == "prompts" and not concepts:
            raise ParamError("prompts", "give at least one non-empty concept to segment")
        return self.check(JobSpec(model=model, prompt=prompt, prompts=concepts, params=clean))

    def check(self, spec: JobSpec) -> JobSpec:
        """Cross-field rules beyond the per-parameter schema; override as needed."""
        return spec

    def cost(self, model: str, params: dict[str, Any]) -> float:
        """Estimated cost in USD of one item of `model` with these (validated) parameters."""
        for m in self.models():
            if m.name == model:
                return float(m.cost_per_item_usd or 0.0)
        return 0.0

    def work(self, params: dict[str, Any]) -> float:
        """How much work an item with these parameters is, in the provider's own units: estimates
        scale measured seconds per unit by it (app/services/estimates.py). 1.0: parameters do not
        change the time much."""
        return 1.0

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label or self.name,
            "description": self.description,
            "queue": self.queue,
            "demo": self.demo,
            "prompt_field": self.prompt_field,
            "max_prompt_chars": self.max_prompt_chars,
            "default_model": self.default_model(),
            "models": [
                {
                    "name": m.name,
                    "label": m.label,
                    "description": m.description,
                    "cost_per_item_usd": m.cost_per_item_usd,
                    "seconds_per_item": m.seconds_per_item,
                    "constraints": m.constraints,
                    "params": [p.as_dict() for p in self.params(m.name)],
                }
                for m in self.models()
            ],
        }

    def load(self, device: str) -> None:  # noqa: B027 - optional hook: most providers load something
        """Load weights / clients once per worker process. `device` is "cpu" or "cuda:N"."""

    @abc.abstractmethod
    def run(self, input_path: Path, spec: JobSpec, ctx: RunContext) -> RunResult: ...

    def run_batch(self, entries: list[BatchEntry]) -> list[RunResult | BaseException]:
        """Several items of one model at once: one result or raised exception per entry, in order.

        The worker calls it only with entries of the same model, at most `max_batch` of them. One
        entry's failure (or cancel) must not fail the others. Default: one by one.
        """
        results: list[RunResult | BaseException] = []
        for entry in entries:
            try:
                results.append(self.run(entry.input_path, entry.spec, entry.ctx))
            except Exception as exc:  # noqa: BLE001 - handed back per entry, as the contract says
                results.append(exc)
        return results
