"""What workers and the control side exchange: the item message, the state reports, the manifest, and
the storage-grant bodies of the worker API.

Both sides build and parse these models; a shape that does not parse is logged and dropped by the
side that receives it, never half-applied. Two choices hold for every model here:

- `extra="ignore"`: workers of the previous version keep draining through a deploy, so each side
  reads what it knows of a newer or older peer's message and leaves the rest (a field this side
  does not know cannot change what it does);
- `strict=True`: no coercion. A report's (job, item, attempt, input) is what its proof was signed
  over (app/proofs.py); the string "1" is not the attempt 1, and `True` is not an attempt at all.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

log = logging.getLogger(__name__)

# How much of a shape that does not parse goes into the log: enough to find its sender.
LOGGED_CHARS = 500
# Where workers before the typed contract left a remote task's id (only in the result's meta).
LEGACY_REMOTE_ID_KEY = "runway_task_id"


class WireModel(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    def wire(self) -> dict[str, Any]:
        """The JSON-ready body that goes on the wire."""
        return self.model_dump(mode="json")


def _excerpt(raw: Any) -> str:
    text = repr(raw)
    return text if len(text) <= LOGGED_CHARS else text[:LOGGED_CHARS] + "..."


def _errors(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(body)'}: {e['msg']}" for e in exc.errors()[:5]
    )


# --- the item message: control side -> worker, one per item attempt ------------------------------


class ItemMessage(WireModel):
    """Everything a worker needs to run one attempt of one item (GPU hosts have no database)."""

    item_id: str
    job_id: str
    attempt: Annotated[int, Field(ge=1)]
    provider: str
    model: str
    input_key: str
    # An item's own prompt, concepts and parameters (per-image work) already merged over the job's.
    prompt: str | None = None
    prompts: list[str] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)
    deadline_s: float | None = None
    # Lets the worker speak for this item and attempt only (reports, storage grants). A message
    # without one runs nowhere: the grants refuse it before it takes the lease.
    proof: str | None = None
    # Which publication of the item this message is: an older one is refused (taken back, published again).
    dispatch: str | None = None
    # Published again by the reconciler: the worker looks for a committed manifest before running it.
    redelivery: bool = False

    @classmethod
    def parse(cls, raw: Any) -> ItemMessage | None:
        """The message, or None (logged) when it does not parse."""
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            log.error("dropping an item message that does not parse (%s): %s", _errors(exc), _excerpt(raw))
            return None


# --- results: the manifest an attempt commits, and its outputs -----------------------------------


class OutputEntry(WireModel):
    """One object an attempt wrote, under its own `outputs/{job}/{item}/{attempt}/` prefix."""

    key: str
    content_type: str | None = None
    role: str | None = None
    size: Annotated[int, Field(ge=0)] | None = None


class LegendEntry(WireModel):
    """One SAM3 concept of an item (`meta.legend`): how many instances it found, in which colour."""

    concept: str
    instances: Annotated[int, Field(ge=0)]
    colour: str
    role: str
    # Its layer output; None when it found no instances.
    layer_role: str | None = None


_LEGEND = TypeAdapter(list[LegendEntry])


def _checked_meta(meta: dict[str, Any]) -> dict[str, Any]:
    # A result's meta is the provider's own (kept as it came); the parts the web app reads are typed.
    if meta.get("legend") is not None:
        _LEGEND.validate_python(meta["legend"], strict=True)
    return meta


class Manifest(WireModel):
    """The attempt's commit marker, written last under its prefix: the item succeeded with these outputs."""

    item_id: str
    job_id: str
    attempt: Annotated[int, Field(ge=1)]
    outputs: list[OutputEntry] = Field(default_factory=list)
    meta: dict[str, Any] = Field(default_factory=dict)
    worker: str | None = None
    duration_ms: float | None = None
    finished_at: float | None = None

    @field_validator("meta")
    @classmethod
    def _typed_meta(cls, meta: dict[str, Any]) -> dict[str, Any]:
        return _checked_meta(meta)

    @classmethod
    def parse(cls, raw: Any) -> Manifest | None:
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            log.error("a manifest that does not parse (%s): %s", _errors(exc), _excerpt(raw))
            return None


# --- state reports: worker (or the reconciler) -> control side ------------------------------------


class ReportBase(WireModel):
    item_id: str
    job_id: str
    attempt: int
    # When the worker saw it (a Unix time).
    at: float | None = None
    # The item's proof, checked by the control side (app/proofs.py); reports the reconciler makes
    # itself carry none and never pass through the stream.
    input_key: str | None = None
    proof: str | None = None
    worker: str | None = None
    detail: str | None = None

    def signed_fields(self) -> dict[str, Any]:
        """What the proof covers, as app/proofs.py reads it."""
        return {
            "job_id": self.job_id,
            "item_id": self.item_id,
            "attempt": self.attempt,
            "input_key": self.input_key,
            "proof": self.proof,
        }


class RunningReport(ReportBase):
    state: Literal["running"]
    device: str | None = None


class SucceededReport(ReportBase):
    state: Literal["succeeded"]
    outputs: list[OutputEntry] = Field(default_factory=list)
    meta: dict[str, Any] = Field(default_factory=dict)
    duration_ms: float | None = None
    # The id of the work at a remote API, when a provider ran it there: taken from the result's
    # meta unless given.
    remote_id: str | None = None
    # Set only by a recovery from storage: when the attempt started, if it never said so.
    started_at: float | None = None

    @field_validator("meta")
    @classmethod
    def _typed_meta(cls, meta: dict[str, Any]) -> dict[str, Any]:
        return _checked_meta(meta)

    @model_validator(mode="before")
    @classmethod
    def _remote_id_from_meta(cls, data: Any) -> Any:
        # Providers record it in their meta; workers before the typed contract used the older key.
        if isinstance(data, dict) and data.get("remote_id") is None and isinstance(data.get("meta"), dict):
            meta = data["meta"]
            remote = meta.get("remote_id") or meta.get(LEGACY_REMOTE_ID_KEY)
            if isinstance(remote, str):
                return {**data, "remote_id": remote}
        return data


class FailedReport(ReportBase):
    state: Literal["failed"]
    error: str | None = None
    error_code: str | None = None
    # Whether another attempt may succeed (the control side retries up to the item's max attempts).
    retryable: bool = False


class CancelledReport(ReportBase):
    state: Literal["cancelled"]


Report = Annotated[
    RunningReport | SucceededReport | FailedReport | CancelledReport, Field(discriminator="state")
]
REPORT_STATES = ("running", "succeeded", "failed", "cancelled")
FINAL_STATES = ("succeeded", "failed", "cancelled")
_REPORT: TypeAdapter[Report] = TypeAdapter(Report)


def parse_report(raw: Any) -> Report | None:
    """The typed report, or None (logged with enough of it to find its sender) when it does not parse."""
    try:
        return _REPORT.validate_python(raw)
    except ValidationError as exc:
        log.warning("dropping a report that does not parse (%s): %s", _errors(exc), _excerpt(raw))
        return None


# --- the worker API's storage grants (web/worker_api.py, app/services/grants.py) ------------------


class ItemIdentity(WireModel):
    """Which delivery of which item a host speaks for; the proof makes it believable."""

    item_id: str
    job_id: str
    attempt: int
    input_key: str | None = None
    proof: str | None = None
    dispatch: str | None = None

    @classmethod
    def of(cls, message: ItemMessage) -> ItemIdentity:
        return cls(
            item_id=message.item_id,
            job_id=message.job_id,
            attempt=message.attempt,
            input_key=message.input_key,
            proof=message.proof,
            dispatch=message.dispatch,
        )


class ReadGrantRequest(ItemIdentity):
    pass


class OutputRequest(WireModel):
    key: str
    content_type: str | None = None


class WriteGrantRequest(ItemIdentity):
    # The lease token this host holds for the item (app/coordination.py).
    lease: str
    outputs: list[OutputRequest]


class SignedUrl(WireModel):
    key: str
    url: str


class ReadGrant(WireModel):
    input: SignedUrl
    manifest: SignedUrl
    expires_s: int


class SignedPut(SignedUrl):
    content_type: str | None = None


class WriteGrant(WireModel):
    puts: list[SignedPut]
    expires_s: int
