"""The HTTP API's request and response bodies (`/api/v1`).

The views parse every JSON request body with `parse()` and the OpenAPI document (web/openapi.py)
is generated from these models, so what the API accepts, what it answers and what the document
says are one thing. Responses are built by app/serializers.py; the fuzz test checks every answer
against the document, and tests/app/test_api_contract.py checks the serializers against the models.
Add fields freely; never rename one.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag, ValidationError

from app.errors import InvalidInput

ItemStatus = Literal["pending", "queued", "running", "succeeded", "failed", "cancelled"]
JobStatus = Literal["queued", "running", "paused", "succeeded", "failed", "cancelled"]
Priority = Literal["low", "normal", "high"]
WebhookEvent = Literal["item.completed", "item.failed", "job.completed"]
UploadContentType = Literal["image/png", "image/jpeg", "image/webp"]
Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
Fraction = Annotated[float, Field(ge=0, le=1)]


def _integral(value: Any) -> Any:
    # JSON has one number type: 3.0 is the integer 3 (JSON Schema agrees); 3.5 and "3" stay refused.
    return int(value) if isinstance(value, float) and value.is_integer() else value


# A whole number in a request: strict (no strings, no booleans), but 3.0 counts.
Whole = Annotated[int, BeforeValidator(_integral)]
Concurrency = Annotated[int, Field(ge=1, le=1_000_000), BeforeValidator(_integral)]


def _no_default(schema: dict[str, Any]) -> None:
    # An optional field that may be left out but not sent as null: the document must not say "default: null".
    schema.pop("default", None)


def optional(**kwargs: Any) -> Any:
    """A field a body may leave out, but may not send as null."""
    return Field(None, json_schema_extra=_no_default, **kwargs)


class Request(BaseModel):
    """A request body: unknown fields are refused (a typo is an error, not a silent default)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Response(BaseModel):
    """A response body: the document lists every field the API sends, and only those."""

    model_config = ConfigDict(extra="forbid")


# --- errors ---------------------------------------------------------------------------------


class ErrorDetail(Response):
    code: str = Field(description="machine-readable: invalid_parameter, not_found, forbidden, ...")
    message: str
    field: str | None = optional(description="the offending field, as a path: `inputs[3].prompt`")


class Error(Response):
    error: ErrorDetail


# --- assets and uploads ---------------------------------------------------------------------


class Asset(Response):
    key: str
    size: int | None = Field(description="bytes")
    content_type: str | None
    width: int | None
    height: int | None
    sha256: str | None
    filename: str | None


class AssetList(Response):
    assets: list[Asset]
    next_cursor: str | None


class Uploaded(Response):
    assets: list[Asset]


class PresignFile(Request):
    name: str = Field(min_length=1, max_length=1024, pattern=r"\S", description="the file's name")
    size: Whole = Field(ge=1, description="bytes; at most MAX_UPLOAD_BYTES")
    content_type: UploadContentType


class PresignRequest(Request):
    files: list[PresignFile] = Field(min_length=1, max_length=1000)
    expires_in: Whole = optional(
        ge=1, description="seconds the URLs live (default and most: UPLOAD_URL_TTL_S)"
    )


class PresignedUpload(Response):
    name: str = Field(description="the name as it will be kept (cleaned)")
    key: str = Field(description="staging key, for complete")
    url: str
    method: Literal["PUT"]
    headers: dict[str, str]
    expires_at: Timestamp


class Presigned(Response):
    uploads: list[PresignedUpload]


class CompleteRequest(Request):
    keys: list[str] = Field(
        min_length=1, max_length=100, description="staging keys from POST /uploads/presign"
    )


class CompletedAsset(Asset):
    upload_key: str = Field(description="the staging key it was uploaded under")


class RejectedUpload(Response):
    key: str
    name: str
    code: Literal["not_found", "too_large", "invalid_image"]
    error: str


class Completed(Response):
    assets: list[CompletedAsset]
    rejected: list[RejectedUpload]


class PromptsFileStored(Response):
    key: str = Field(description="name it in POST /jobs `prompts_file`")
    filename: str
    rows: int
    names: list[str] = Field(description="the first 20 file names it maps, sorted")


# --- jobs and items -------------------------------------------------------------------------


class InputEntry(Request):
    """One image with what it brings of its own; its values win over the job's."""

    key: str = Field(description="the image's storage key")
    prompt: str | None = None
    negative_prompt: str | None = Field(None, description="short for params.negative_prompt")
    seed: Whole | None = Field(None, description="short for params.seed")
    params: dict[str, Any] | None = None
    prompts: list[str] | None = Field(None, description="SAM3 concepts")


def _input_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "key"
    return "entry" if isinstance(value, dict | InputEntry) else None


InputItem = Annotated[
    Annotated[str, Tag("key")] | Annotated[InputEntry, Tag("entry")],
    Discriminator(
        _input_kind,
        custom_error_type="input_entry",
        custom_error_message="must be a storage key or an object with a key",
    ),
]
# Parts of a validation error's location that name a union member, not a field.
_UNION_TAGS = frozenset({"key", "entry"})


class NewJob(Request):
    """Give `inputs` or `inputs_prefix`."""

    provider: str = optional(description="defaults to the deployment's default provider")
    model: str | None = None
    inputs: list[InputItem] | None = Field(
        None,
        min_length=1,
        description="image keys, or objects carrying a prompt (and parameters) per image; an entry's "
        "own values win over the job's, and an error names it (`inputs[3].params.seed`)",
    )
    inputs_prefix: str | None = Field(
        None, description="a folder: every PNG, JPEG or WEBP under it, in key order (instead of inputs)"
    )
    prompts_file: str | None = Field(
        None,
        description="key of a CSV or JSONL file (POST /prompt-files) mapping file name or key to prompt "
        "and parameters; it fills in what the entries do not say",
    )
    prompt: str | None = None
    prompts: list[str] | None = Field(None, description="SAM3 concepts")
    params: dict[str, Any] | None = None
    priority: Priority | None = Field(None, description="default: normal")
    max_concurrency: Concurrency | None = Field(
        None,
        description="most items of this job queued or running at once (default: no cap); PATCH "
        "/jobs/{id} changes it",
    )
    idempotency_key: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="the same key with the same body returns the first job (200); with another body, "
        "409 idempotency_conflict",
    )
    webhook: str | None = Field(
        None,
        description="http(s) URL told about this job's events (Standard Webhooks, signed with your "
        "secret: GET /account); internal addresses are refused",
    )
    webhook_events: list[WebhookEvent] | None = Field(
        None, min_length=1, description="default: job.completed"
    )


class JobChange(Request):
    """Give priority and/or max_concurrency."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    priority: Priority = optional()
    max_concurrency: Concurrency | None = Field(None, description="null: no cap")


class Output(Response):
    key: str
    url: str
    content_type: str | None
    role: str | None = Field(
        description="what the file is: wan_local `video` and `poster` (its first frame, PNG); runway "
        "`video`; sam3 `mask_<concept>` (labelled instance mask), `layer_<concept>` (that concept's "
        "instances as a see-through RGBA PNG, only where it found any), `instances` (JSON) and "
        "`preview` (all concepts painted on the input)"
    )
    size: int | None = Field(description="bytes")


class LegendEntry(BaseModel):
    """One SAM3 concept of an item: how many instances it found, in which colour."""

    concept: str
    instances: int = Field(ge=0)
    colour: str = Field(pattern=r"^#[0-9a-f]{6}$")
    role: str = Field(description="its mask output")
    layer_role: str | None = Field(description="its layer output; null when it found no instances")


class ItemMeta(BaseModel):
    """What the provider records about the run: wan_local `width`, `height`, `num_frames`, `fps`,
    `seed`...; sam3 `instances` (all concepts), `prompts` and `legend`."""

    model_config = ConfigDict(extra="allow")

    legend: list[LegendEntry] = optional()


Counts = Annotated[int, Field(ge=0)]


class StatusCounts(Response):
    pending: Counts
    queued: Counts
    running: Counts
    succeeded: Counts
    failed: Counts
    cancelled: Counts


class Item(Response):
    id: str
    job_id: str
    index: int = Field(ge=0, description="its place in the job, from 0")
    input_key: str
    prompt: str | None = Field(description="what the item runs with: its own, else the job's")
    prompts: list[str] = Field(description="SAM3 concepts it runs with")
    params: dict[str, Any] = Field(description="its own parameters (only those that differ from the job's)")
    status: ItemStatus
    attempt: int
    max_attempts: int
    progress: Fraction
    outputs: list[Output]
    error: str | None
    error_code: str | None
    worker: str | None
    device: str | None
    remote_id: str | None = Field(description="the remote provider's task id (Runway)")
    meta: ItemMeta
    cost_usd: float | None
    duration_ms: float | None = Field(description="how long the provider ran")
    queue: str | None
    created_at: Timestamp | None
    queued_at: Timestamp | None
    started_at: Timestamp | None
    finished_at: Timestamp | None


class Job(Response):
    id: str
    status: JobStatus
    provider: str
    model: str
    prompt: str | None
    prompts: list[str]
    params: dict[str, Any]
    priority: Priority
    total: int = Field(ge=0, description="items in the job")
    progress: Fraction
    counts: StatusCounts
    created_by: str | None = Field(description="the submitter's email")
    idempotency_key: str | None
    created_at: Timestamp | None
    started_at: Timestamp | None
    finished_at: Timestamp | None
    cancelled_at: Timestamp | None
    waiting_reason: str | None = Field(description="why no item runs yet (no worker, queue paused, ...)")
    routed_from: str | None = Field(description="the provider asked for, when the job was sent elsewhere")
    webhook: str | None
    webhook_events: list[WebhookEvent]
    paused_at: Timestamp | None
    max_concurrency: int | None


class JobWithItems(Job):
    items: list[Item] = Field(description="a page of the job's items, by index")
    items_offset: int = Field(ge=0)
    items_next_offset: int | None = Field(description="the next page's items_offset; null on the last")


class JobList(Response):
    jobs: list[Job]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last")


class Cancelled(Response):
    cancelled: int = Field(ge=0, description="items cancelled")
    job: Job


class Paused(Response):
    paused: bool = Field(description="false: it was paused already")
    job: Job


class Resumed(Response):
    resumed: bool = Field(description="false: it was not paused")
    job: Job


class Retried(Response):
    retried: int = Field(ge=0, description="items sent again")
    job: Job


class Event(Response):
    id: int
    at: Timestamp | None
    kind: str
    item_id: str | None
    from_status: str | None
    to_status: str | None
    attempt: int | None
    worker: str | None
    detail: str | None


class EventList(Response):
    events: list[Event]


# --- webhooks and account -------------------------------------------------------------------


class WebhookDelivery(Response):
    id: int
    webhook_id: str = Field(description="the webhook-id header, the same on every attempt")
    event: WebhookEvent
    item_id: str | None
    url: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_attempt_at: Timestamp | None
    last_status_code: int | None
    last_error: str | None
    last_latency_ms: float | None
    next_attempt_at: Timestamp | None = Field(description="while pending: when the next attempt is due")
    created_at: Timestamp | None
    delivered_at: Timestamp | None


class WebhookDeliveries(Response):
    webhook: str | None
    deliveries: list[WebhookDelivery]


class Account(Response):
    email: str
    role: Literal["admin", "member"]
    is_admin: bool
    token_scope: Literal["write", "read", "session"] = Field(
        description="the scope of the token the request came with; `session` for the signed-in pages"
    )
    webhook_secret: str = Field(description="whsec_ + base64: verifies webhook signatures")


# --- overview -------------------------------------------------------------------------------


class ProviderCounts(StatusCounts):
    total: Counts


class Stats(Response):
    providers: dict[str, ProviderCounts] = Field(description="provider name -> its items per status")


class Lane(BaseModel):
    """What one device of a worker announced."""

    model_config = ConfigDict(extra="allow")

    device: str | None = optional()
    state: str | None = optional(description="loading, ready, broken or draining")


class QueueState(Response):
    waiting: int | None = Field(description="messages in the broker's window; null: broker unreachable")
    pending: int = Field(description="items waiting in the database")
    window: int | None = Field(description="how many messages the scheduler keeps in the broker")
    paused: bool
    running: int
    workers_online: int = Field(description="workers taking items now")
    workers: list[str] = Field(description="also those still loading (or broken)")
    devices: dict[str, list[str | None]]
    lanes: dict[str, list[Lane]]
    reports_waiting: int | None = optional(description="control only: worker reports not yet applied")


class Queues(Response):
    queues: dict[str, QueueState]
    broker_reachable: bool


class QueuePaused(Response):
    queue: str
    paused: bool
    changed: bool = Field(description="false: it already was")


class ParamInfo(BaseModel):
    """One tunable parameter of a model."""

    model_config = ConfigDict(extra="allow")

    name: str
    type: str = Field(description='"int", "float", "str", "bool", "enum" or "list[str]"')


class ModelInfo(Response):
    name: str
    label: str
    description: str
    cost_per_item_usd: float | None
    seconds_per_item: float | None
    constraints: dict[str, Any]
    params: list[ParamInfo]


class ProviderInfo(Response):
    name: str
    label: str
    description: str
    queue: str
    demo: bool
    prompt_field: str | None
    max_prompt_chars: int
    default_model: str
    models: list[ModelInfo]


class Providers(Response):
    providers: list[ProviderInfo]
    default: str


# Every body the document names, in the order it lists them.
REQUEST_MODELS: tuple[type[BaseModel], ...] = (NewJob, JobChange, PresignRequest, CompleteRequest)
RESPONSE_MODELS: tuple[type[BaseModel], ...] = (
    Error,
    Asset,
    AssetList,
    Uploaded,
    Presigned,
    Completed,
    PromptsFileStored,
    Job,
    JobWithItems,
    JobList,
    Item,
    Cancelled,
    Paused,
    Resumed,
    Retried,
    EventList,
    WebhookDeliveries,
    WebhookDelivery,
    Account,
    Stats,
    Queues,
    QueuePaused,
    Providers,
)


# --- parsing --------------------------------------------------------------------------------

Body = TypeVar("Body", bound=Request)


def field_path(loc: tuple[int | str, ...]) -> str:
    """A validation error's location as the API names fields: `inputs[3].params.seed`."""
    path = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in _UNION_TAGS and i > 0 and isinstance(loc[i - 1], int):
            continue
        else:
            path += f".{part}" if path else part
    return path


def _words(error: Any, path: str) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "missing":
        return f"{path} is required"
    if kind == "extra_forbidden":
        return f"unknown field {path.rsplit('.', 1)[-1]!r}"
    if kind in ("string_type", "str_type"):
        return f"{path} must be a string"
    if kind in ("int_type", "int_from_float", "int_parsing"):
        return f"{path} must be a whole number"
    if kind in ("float_type", "float_parsing"):
        return f"{path} must be a number"
    if kind == "bool_type":
        return f"{path} must be true or false"
    if kind == "list_type":
        return f"{path} must be a list"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"{path} must be an object"
    if kind == "too_short":
        if ctx.get("actual_length") == 0:
            return f"{path} is empty: give at least {ctx.get('min_length')}"
        return f"{path} is too short: at least {ctx.get('min_length')}"
    if kind == "too_long":
        return f"{path} is too long: at most {ctx.get('max_length')}"
    if kind == "string_too_short":
        return f"{path} must have at least {ctx.get('min_length')} characters"
    if kind == "string_too_long":
        return f"{path} must have at most {ctx.get('max_length')} characters"
    if kind == "string_pattern_mismatch":
        return f"{path} must not be blank"
    if kind == "greater_than_equal":
        return f"{path} must be at least {ctx.get('ge')}"
    if kind == "less_than_equal":
        return f"{path} must be at most {ctx.get('le')}"
    if kind == "literal_error":
        return f"{path} must be one of {ctx.get('expected')}"
    return f"{path}: {error['msg']}"


def parse(model: type[Body], data: Any) -> Body:
    """`data` (a decoded JSON body) as `model`; InvalidInput names the first offending field."""
    try:
        return model.model_validate(data, strict=True)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        path = field_path(tuple(error["loc"])) or "body"
        raise InvalidInput(path, _words(error, path)) from None
