"""A local server speaking the documented part of Runway's API, with fault knobs.

Used by the embedded default stack (no Runway key needed) and by tests:

    python -m providers.runway_sim --port 8099

    server = RunwaySimServer(duration_s=0.2).start()   # -> "http://127.0.0.1:PORT"
    ...
    server.stop()

It answers what the official `runwayml` SDK (5.24) parses, and refuses what Runway
refuses; tests drive it with that SDK (tests/providers/test_runway_sdk.py), and
where the two disagree the SDK wins. Its rules are its own (`RUNWAY_MODELS`), not
read from our client, so a client that drifts from Runway's API fails against it.

Endpoints (Runway API version 2024-11-06):

* `POST /v1/image_to_video`: checks the bearer token, `X-Runway-Version` and the
  body per model: ratio, duration (required for gen4.5), promptText (required for
  gen4.5; at most 1000 UTF-16 code units), seed, `audio` (Veo), and `promptImage`
  as a string or an array of `{uri, position}` ("first", and "last" for Veo), each
  an HTTPS URL on a domain name (no IP address, at most 2048 characters), a base64
  data URI of a PNG / JPEG / WebP image up to 5 MB, or a `runway://` URI from an
  upload. Answers `{"id", "estimatedCost"}`, or 400 with `{"error", "issues"}`.
* `GET /v1/tasks/{id}`: PENDING / THROTTLED -> RUNNING (with `progress`) ->
  SUCCEEDED (`output`: a small real mp4 made from the input image, served by this
  server) or FAILED (`failure`, `failureCode`); CANCELLED after a DELETE. Pending
  states carry `estimatedCost`, finished ones the charged `cost` (0 for a failed
  task or one cancelled before it ran).
* `DELETE /v1/tasks/{id}`: cancels an unfinished task, deletes a finished or
  cancelled one (then 404); 204.
* `POST /v1/uploads`: an ephemeral upload (`uploadUrl`, `fields`, `runwayUri`),
  the file then POSTed as multipart form data to `uploadUrl` on this server.

Where it differs from Runway: image URLs are fetched when the video is rendered
(an unreachable one fails the task with ASSET.INVALID) rather than at creation;
a cancelled task stays readable as CANCELLED until deleted.

Test hooks: `POST /_sim/config` (JSON of `SimConfig` fields), `GET /_sim/stats`,
`POST /_sim/reset`, or the same through the `RunwaySimServer` object.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import io
import ipaddress
import json
import os
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

API_VERSION = "2024-11-06"
PROMPT_MAX_UTF16 = 1000
DATA_URI_MAX_BYTES = 5 * 1024 * 1024
URL_MAX_CHARS = 2048
SEED_MAX = 4294967295
IMAGE_TYPES = ("image/png", "image/jpeg", "image/jpg", "image/webp")

GEN4_RATIOS = ("1280:720", "720:1280", "1104:832", "832:1104", "960:960", "1584:672")
VEO_RATIOS = ("1280:720", "720:1280", "1080:1920", "1920:1080")


@dataclass(frozen=True)
class ModelRules:
    """What `POST /v1/image_to_video` takes for one model, as the runwayml SDK types it."""

    ratios: tuple[str, ...]
    durations: tuple[int, ...]
    default_duration: int
    # Credits per output second from Runway's published pricing (the estimate and the charge).
    credits_per_second: float
    duration_required: bool = False
    prompt_required: bool = False
    # Positions an array `promptImage` may name; "first" is always needed.
    positions: tuple[str, ...] = ("first",)
    # Set for the models that take `audio` (default on): their rate without it.
    credits_per_second_without_audio: float | None = None

    @property
    def takes_audio(self) -> bool:
        return self.credits_per_second_without_audio is not None

    def credits(self, body: dict[str, Any]) -> float:
        per_second = self.credits_per_second
        if self.takes_audio and body.get("audio") is False:
            per_second = self.credits_per_second_without_audio or per_second
        return per_second * int(body.get("duration", self.default_duration))


RUNWAY_MODELS: dict[str, ModelRules] = {
    # The SDK types gen4_turbo's duration as any int; Runway's reference gives 2-10 s (default 10).
    "gen4_turbo": ModelRules(GEN4_RATIOS, tuple(range(2, 11)), 10, 5),
    "gen4.5": ModelRules(
        GEN4_RATIOS, tuple(range(2, 11)), 5, 12, duration_required=True, prompt_required=True
    ),
    "veo3.1": ModelRules(
        VEO_RATIOS, (4, 6, 8), 8, 40, positions=("first", "last"), credits_per_second_without_audio=20
    ),
    "veo3.1_fast": ModelRules(
        VEO_RATIOS, (4, 6, 8), 8, 15, positions=("first", "last"), credits_per_second_without_audio=10
    ),
}


@dataclass
class SimConfig:
    # Seconds a task spends THROTTLED, then PENDING, then RUNNING.
    throttled_s: float = 0.0
    pending_s: float = 0.05
    duration_s: float = 1.0
    # The next N API requests (matching `fault_methods`) answer 429 / 500.
    fail_429: int = 0
    fail_500: int = 0
    # Until this time (time.time()), every API request (matching `fault_methods`) answers 429 / 500.
    fail_429_until: float = 0.0
    fail_500_until: float = 0.0
    # Methods the 429/500/slow faults apply to ([] = all): e.g. ["POST"].
    fault_methods: list[str] | None = None
    # The next N creates make their task, then hold the answer back `answer_delay_s` (a client
    # that gives up sooner never learns the task's id); each image's create is held at most once, so
    # N lost answers reach N different items however their retries interleave.
    answer_delay_s: float = 0.0
    answer_delay_count: int = 0
    # Tasks created from now on end FAILED with this failureCode.
    fail_code: str | None = None
    fail_message: str = "An unexpected error occurred."
    # Credits that tasks created from now on report as charged when they succeed (None: the price
    # list), as Runway's final `cost` may differ from its estimate.
    charge_credits: int | None = None
    # The next `slow_count` API requests (-1: all) wait this long before being handled.
    slow_s: float = 0.0
    slow_count: int = -1
    # Accepted bearer token (None: any non-empty token).
    api_key: str | None = None
    # Size of the produced video (width; height follows the ratio) and its frame rate.
    video_width: int = 160
    video_fps: int = 8


@dataclass
class _Task:
    id: str
    created: float
    created_at: str
    body: dict[str, Any]
    throttled_s: float
    pending_s: float
    duration_s: float
    fail_code: str | None
    fail_message: str
    estimated_credits: float
    charge_credits: int | None
    # The state a DELETE found it in: cancelled while RUNNING is charged, before that refunded.
    cancelled_in: str | None = None
    deleted: bool = False
    video: bytes | None = None
    render_error: str | None = None


class RunwaySim:
    """The WSGI application and its state."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.lock = threading.Lock()
        self.tasks: dict[str, _Task] = {}
        # runway:// URI -> the uploaded bytes (None until the file arrives at its upload URL).
        self.uploads: dict[str, bytes | None] = {}
        self.answers_held: set[str] = set()  # images whose create answer was held back
        self.stats: dict[str, Any] = {}
        self.reset_stats()
        self.urls = Map(
            [
                Rule("/v1/image_to_video", endpoint="create", methods=["POST"]),
                Rule("/v1/tasks/<task_id>", endpoint="get_task", methods=["GET"]),
                Rule("/v1/tasks/<task_id>", endpoint="delete_task", methods=["DELETE"]),
                Rule("/v1/uploads", endpoint="create_upload", methods=["POST"]),
                Rule("/_sim/uploads/<upload_id>", endpoint="upload_file", methods=["POST"]),
                Rule("/_sim/outputs/<task_id>/<name>", endpoint="output", methods=["GET"]),
                Rule("/_sim/config", endpoint="config", methods=["GET", "POST"]),
                Rule("/_sim/stats", endpoint="stats", methods=["GET"]),
                Rule("/_sim/reset", endpoint="reset", methods=["POST"]),
                Rule("/_sim/health", endpoint="health", methods=["GET"]),
            ]
        )

    # ----- state -------------------------------------------------------------------

    def reset_stats(self) -> None:
        with self.lock:
            self.tasks.clear()
            self.uploads.clear()
            self.stats = {
                "tasks_created": 0,
                "tasks_by_prompt": {},
                "tasks_by_seed": {},
                "deletes": 0,
                "cancelled": 0,
                "uploads": 0,
                "requests": {},
                "faults_served": {"429": 0, "500": 0, "slow": 0, "answer_delayed": 0},
                "output_downloads": 0,
                "output_requests_with_auth": 0,
            }

    def configure(self, **changes: Any) -> SimConfig:
        known = {f.name for f in fields(SimConfig)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown sim settings {unknown}; known: {sorted(known)}")
        with self.lock:
            for key, value in changes.items():
                setattr(self.config, key, value)
            return SimConfig(**asdict(self.config))

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            out = json.loads(json.dumps(self.stats))
            tasks = {}
            for t in self.tasks.values():
                status = self._status(t)[0]
                tasks[t.id] = {
                    "status": status,
                    "model": t.body.get("model"),
                    "ratio": t.body.get("ratio"),
                    "duration": t.body.get("duration"),
                    "seed": t.body.get("seed"),
                    "promptText": t.body.get("promptText"),
                    "audio": t.body.get("audio"),
                    "fields": sorted(t.body),
                    "credits": self._charged(t, status),
                    "deleted": t.deleted,
                }
            out["tasks"] = tasks
            return out

    # ----- WSGI --------------------------------------------------------------------

    def __call__(self, environ, start_response):
        request = Request(environ)
        adapter = self.urls.bind_to_environ(environ)
        try:
            endpoint, args = adapter.match()
            response = getattr(self, f"on_{endpoint}")(request, **args)
        except HTTPException as exc:
            response = _json({"error": exc.description or exc.name}, exc.code or 500)
        return response(environ, start_response)

    def _count(self, key: str) -> None:
        with self.lock:
            self.stats["requests"][key] = self.stats["requests"].get(key, 0) + 1

    def _api_gate(self, request: Request, key: str) -> Response | None:
        """Faults, auth and version checks shared by the /v1 endpoints."""
        self._count(key)
        with self.lock:
            cfg = self.config
            applies = not cfg.fault_methods or request.method in cfg.fault_methods
            slow = 0.0
            if applies and cfg.slow_s > 0 and cfg.slow_count != 0:
                slow = cfg.slow_s
                if cfg.slow_count > 0:
                    cfg.slow_count -= 1
                self.stats["faults_served"]["slow"] += 1
            fault = None
            now = time.time()
            if applies and now < cfg.fail_429_until:
                fault = 429
            elif applies and now < cfg.fail_500_until:
                fault = 500
            elif applies and cfg.fail_429 > 0:
                cfg.fail_429 -= 1
                fault = 429
            elif applies and cfg.fail_500 > 0:
                cfg.fail_500 -= 1
                fault = 500
            if fault:
                self.stats["faults_served"][str(fault)] += 1
            api_key = cfg.api_key
        if slow:
            time.sleep(slow)
        if fault == 429:
            return _json(
                {"error": "You have exceeded the rate limit. Please slow down."}, 429, {"Retry-After": "0"}
            )
        if fault == 500:
            return _json({"error": "Internal server error"}, 500)
        auth = request.headers.get("Authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else ""
        if not token or (api_key is not None and token != api_key):
            return _json({"error": "Invalid API key"}, 401)
        version = request.headers.get("X-Runway-Version")
        if version != API_VERSION:
            return _json(
                {
                    "error": f"Invalid or missing X-Runway-Version header; expected {API_VERSION!r}, got {version!r}"
                },
                400,
            )
        return None

    def on_health(self, request: Request) -> Response:
        return _json({"ok": True})

    def on_config(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                cfg = self.configure(**(request.get_json(force=True) or {}))
            except (ValueError, TypeError) as exc:
                return _json({"error": str(exc)}, 400)
            return _json(asdict(cfg))
        with self.lock:
            return _json(asdict(self.config))

    def on_stats(self, request: Request) -> Response:
        return _json(self.snapshot())

    def on_reset(self, request: Request) -> Response:
        self.reset_stats()
        return _json({"ok": True})

    def on_create(self, request: Request) -> Response:
        gate = self._api_gate(request, "POST /v1/image_to_video")
        if gate is not None:
            return gate
        try:
            body = json.loads(request.get_data(as_text=True) or "null")
        except ValueError:
            return _json({"error": "Request body is not valid JSON"}, 400)
        with self.lock:
            uploaded = {uri for uri, data in self.uploads.items() if data is not None}
        issues = _validate(body, uploaded)
        if issues:
            return _invalid(issues)
        now = time.monotonic()
        rules = RUNWAY_MODELS[body["model"]]
        with self.lock:
            cfg = self.config
            task = _Task(
                id=str(uuid.uuid4()),
                created=now,
                created_at=_now_iso(),
                body=body,
                throttled_s=cfg.throttled_s,
                pending_s=cfg.pending_s,
                duration_s=cfg.duration_s,
                fail_code=cfg.fail_code,
                fail_message=cfg.fail_message,
                estimated_credits=rules.credits(body),
                charge_credits=cfg.charge_credits,
            )
            self.tasks[task.id] = task
            self.stats["tasks_created"] += 1
            prompt = str(body.get("promptText", ""))
            self.stats["tasks_by_prompt"][prompt] = self.stats["tasks_by_prompt"].get(prompt, 0) + 1
            if "seed" in body:
                seed = str(body["seed"])
                self.stats["tasks_by_seed"][seed] = self.stats["tasks_by_seed"].get(seed, 0) + 1
            hold = 0.0
            image = hashlib.sha256(json.dumps(body.get("promptImage")).encode()).hexdigest()
            if cfg.answer_delay_count > 0 and image not in self.answers_held:
                self.answers_held.add(image)
                cfg.answer_delay_count -= 1
                hold = cfg.answer_delay_s
                self.stats["faults_served"]["answer_delayed"] += 1
        if hold:
            time.sleep(hold)
        return _json({"id": task.id, "estimatedCost": {"credits": task.estimated_credits}})

    def _status(self, task: _Task) -> tuple[str, float]:
        if task.cancelled_in is not None:
            return "CANCELLED", 0.0
        elapsed = time.monotonic() - task.created
        if elapsed < task.throttled_s:
            return "THROTTLED", 0.0
        elapsed -= task.throttled_s
        if elapsed < task.pending_s:
            return "PENDING", 0.0
        elapsed -= task.pending_s
        if elapsed < task.duration_s:
            return "RUNNING", elapsed / task.duration_s if task.duration_s else 1.0
        if task.fail_code or task.render_error:
            return "FAILED", 1.0
        return "SUCCEEDED", 1.0

    def _charged(self, task: _Task, status: str) -> int | None:
        """Credits a finished task reports as charged (None while it is unfinished)."""
        full = task.charge_credits if task.charge_credits is not None else round(task.estimated_credits)
        if status == "SUCCEEDED" or (status == "CANCELLED" and task.cancelled_in == "RUNNING"):
            return full
        if status in ("FAILED", "CANCELLED"):
            return 0
        return None

    def on_get_task(self, request: Request, task_id: str) -> Response:
        gate = self._api_gate(request, "GET /v1/tasks")
        if gate is not None:
            return gate
        with self.lock:
            task = self.tasks.get(task_id)
            if task is None or task.deleted:
                raise NotFound("Task not found")
            status, progress = self._status(task)
        if status == "SUCCEEDED" and task.video is None:
            try:
                video = _render_video(
                    self._load_image(_first_image(task.body)),
                    task.body,
                    self.config.video_width,
                    self.config.video_fps,
                )
            except Exception as exc:  # a bad asset fails the task, as Runway does
                with self.lock:
                    task.render_error = f"Could not process the input image: {exc}"
            else:
                with self.lock:
                    task.video = video
            with self.lock:
                status, progress = self._status(task)
        doc: dict[str, Any] = {"id": task.id, "status": status, "createdAt": task.created_at}
        with self.lock:
            charged = self._charged(task, status)
        if charged is None:
            doc["estimatedCost"] = {"credits": task.estimated_credits}
        else:
            doc["cost"] = {"credits": charged}
        if status == "RUNNING":
            doc["progress"] = round(progress, 3)
        elif status == "SUCCEEDED":
            base = request.host_url.rstrip("/")
            doc["output"] = [f"{base}/_sim/outputs/{task.id}/video.mp4?_jwt={uuid.uuid4().hex}"]
        elif status == "FAILED":
            if task.render_error:
                doc["failure"], doc["failureCode"] = task.render_error, "ASSET.INVALID"
            else:
                doc["failure"], doc["failureCode"] = task.fail_message, task.fail_code
        return _json(doc)

    def on_delete_task(self, request: Request, task_id: str) -> Response:
        gate = self._api_gate(request, "DELETE /v1/tasks")
        if gate is not None:
            return gate
        with self.lock:
            task = self.tasks.get(task_id)
            if task is None or task.deleted:
                raise NotFound("Task not found")
            self.stats["deletes"] += 1
            status, _ = self._status(task)
            if status in ("SUCCEEDED", "FAILED", "CANCELLED"):
                task.deleted = True
            else:
                task.cancelled_in = status
                self.stats["cancelled"] += 1
        return Response(status=204)

    def on_create_upload(self, request: Request) -> Response:
        gate = self._api_gate(request, "POST /v1/uploads")
        if gate is not None:
            return gate
        body = request.get_json(silent=True)
        issues = []
        if not isinstance(body, dict):
            issues.append(_issue(["body"], "Expected a JSON object", "invalid_type"))
        else:
            if not isinstance(body.get("filename"), str) or not body["filename"]:
                issues.append(_issue(["filename"], "Required: the file's name", "invalid_type"))
            if body.get("type") != "ephemeral":
                issues.append(
                    _issue(["type"], "Invalid enum value. Expected 'ephemeral'", "invalid_enum_value")
                )
        if issues:
            return _invalid(issues)
        upload_id = uuid.uuid4().hex
        uri = f"runway://uploads/{upload_id}"
        with self.lock:
            self.uploads[uri] = None
        return _json(
            {
                "uploadUrl": f"{request.host_url.rstrip('/')}/_sim/uploads/{upload_id}",
                "fields": {"key": f"uploads/{upload_id}/{body['filename']}"},
                "runwayUri": uri,
            }
        )

    def on_upload_file(self, request: Request, upload_id: str) -> Response:
        """The storage side of an upload: a multipart POST with the given fields and `file`."""
        self._count("POST upload")
        uri = f"runway://uploads/{upload_id}"
        upload = request.files.get("file")
        with self.lock:
            if uri not in self.uploads:
                raise NotFound("No such upload")
            if upload is None or not request.form.get("key", "").startswith(f"uploads/{upload_id}/"):
                return _json({"error": "Expected the upload's fields and a file"}, 400)
            self.uploads[uri] = upload.read()
            self.stats["uploads"] += 1
        return Response(status=204)

    def on_output(self, request: Request, task_id: str, name: str) -> Response:
        self._count("GET output")
        with self.lock:
            self.stats["output_downloads"] += 1
            if request.headers.get("Authorization"):
                self.stats["output_requests_with_auth"] += 1
            task = self.tasks.get(task_id)
            video = task.video if task is not None and not task.deleted else None
        if video is None:
            raise NotFound("Output not found or expired")
        return Response(video, mimetype="video/mp4")

    def _load_image(self, uri: str):
        from PIL import Image, ImageOps

        if uri.startswith("data:"):
            raw = base64.b64decode(uri.split(",", 1)[1])
        elif uri.startswith("runway://"):
            with self.lock:
                raw = self.uploads.get(uri) or b""
        else:
            import requests

            # Runway follows no redirects when it fetches an asset.
            resp = requests.get(uri, timeout=10, allow_redirects=False)
            resp.raise_for_status()
            raw = resp.content
        with Image.open(io.BytesIO(raw)) as opened:
            return ImageOps.exif_transpose(opened).convert("RGB")


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(doc), status=status, mimetype="application/json", headers=headers)


def _issue(path: list[str | int], message: str, code: str = "custom") -> dict[str, Any]:
    return {"code": code, "path": path, "message": message}


def _invalid(issues: list[dict[str, Any]]) -> Response:
    return _json({"error": f"Validation of body failed: {issues[0]['message']}", "issues": issues}, 400)


def _first_image(body: dict[str, Any]) -> str:
    image = body["promptImage"]
    if isinstance(image, str):
        return image
    return next(entry["uri"] for entry in image if entry["position"] == "first")


def _utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _check_image_uri(uri: Any, path: list[str | int], uploaded: set[str]) -> list[dict[str, Any]]:
    """Runway's rules for one image input (docs.dev.runwayml.com/assets/inputs)."""
    if not isinstance(uri, str) or not uri:
        return [_issue(path, "Expected an HTTPS URL, a runway:// upload URI or a data URI", "invalid_type")]
    if uri.startswith("data:"):
        header, comma, payload = uri.partition(",")
        if len(uri) > DATA_URI_MAX_BYTES:
            return [_issue(path, "Data URIs must be at most 5 MB", "too_big")]
        if not comma or not header.endswith(";base64"):
            return [_issue(path, "Invalid data URI.")]
        if header[len("data:") : -len(";base64")].lower() not in IMAGE_TYPES:
            return [_issue(path, "Unsupported asset type. Data URIs must be PNG, JPEG or WebP images.")]
        try:
            base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            return [_issue(path, "Invalid data URI.")]
        return []
    if uri.startswith("runway://"):
        return [] if uri in uploaded else [_issue(path, "Unknown or expired upload URI.")]
    if len(uri) > URL_MAX_CHARS:
        return [_issue(path, f"URLs must be at most {URL_MAX_CHARS} characters", "too_big")]
    try:
        parts = urlsplit(uri)
        host = parts.hostname
    except ValueError:
        return [_issue(path, "Invalid URL")]
    if parts.scheme != "https":
        return [_issue(path, "Only HTTPS URLs are allowed.")]
    if not host:
        return [_issue(path, "Invalid URL")]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return []
    return [_issue(path, "URLs must be hosted on a domain.")]


def _check_prompt_image(image: Any, rules: ModelRules | None, uploaded: set[str]) -> list[dict[str, Any]]:
    if not isinstance(image, list):
        return _check_image_uri(image, ["promptImage"], uploaded)
    positions = rules.positions if rules is not None else ("first", "last")
    issues: list[dict[str, Any]] = []
    seen = []
    for i, entry in enumerate(image):
        if not isinstance(entry, dict):
            issues.append(
                _issue(["promptImage", i], "Expected an object with uri and position", "invalid_type")
            )
            continue
        if entry.get("position") not in positions:
            issues.append(
                _issue(
                    ["promptImage", i, "position"],
                    f"Invalid enum value. Expected {' | '.join(repr(p) for p in positions)}",
                    "invalid_enum_value",
                )
            )
        else:
            seen.append(entry["position"])
        issues += _check_image_uri(entry.get("uri"), ["promptImage", i, "uri"], uploaded)
    if not issues:
        if len(seen) != len(set(seen)):
            issues.append(_issue(["promptImage"], "Each position may be given once"))
        elif "first" not in seen:
            issues.append(_issue(["promptImage"], "A first frame is required"))
    return issues


def _validate(body: Any, uploaded: set[str]) -> list[dict[str, Any]]:
    if not isinstance(body, dict):
        return [_issue(["body"], "Expected a JSON object", "invalid_type")]
    issues = []
    rules = RUNWAY_MODELS.get(body.get("model"))  # type: ignore[arg-type]
    if rules is None:
        issues.append(
            _issue(
                ["model"],
                f"Invalid model {body.get('model')!r}; expected one of {sorted(RUNWAY_MODELS)}",
                "invalid_union_discriminator",
            )
        )
    if "promptImage" not in body:
        issues.append(_issue(["promptImage"], "Required", "invalid_type"))
    else:
        issues += _check_prompt_image(body["promptImage"], rules, uploaded)
    text = body.get("promptText")
    if text is None:
        if rules is not None and rules.prompt_required:
            issues.append(_issue(["promptText"], "Required", "invalid_type"))
    elif not isinstance(text, str) or not text:
        issues.append(_issue(["promptText"], "promptText must be a non-empty string", "invalid_type"))
    elif _utf16_length(text) > PROMPT_MAX_UTF16:
        issues.append(
            _issue(
                ["promptText"],
                f"promptText must be at most {PROMPT_MAX_UTF16} characters (UTF-16 code units)",
                "too_big",
            )
        )
    if rules is not None:
        if body.get("ratio") not in rules.ratios:
            issues.append(
                _issue(
                    ["ratio"],
                    f"Invalid ratio {body.get('ratio')!r} for {body['model']}; expected one of {list(rules.ratios)}",
                    "invalid_enum_value",
                )
            )
        if "duration" not in body and rules.duration_required:
            issues.append(_issue(["duration"], "Required", "invalid_type"))
        duration = body.get("duration", rules.default_duration)
        if isinstance(duration, bool) or duration not in rules.durations:
            issues.append(
                _issue(
                    ["duration"],
                    f"Invalid duration {duration!r} for {body['model']}; expected one of {list(rules.durations)}",
                )
            )
        if rules.takes_audio and "audio" in body and not isinstance(body["audio"], bool):
            issues.append(_issue(["audio"], "Expected boolean", "invalid_type"))
    seed = body.get("seed")
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX
    ):
        issues.append(_issue(["seed"], f"seed must be an integer between 0 and {SEED_MAX}"))
    return issues


def _render_video(image, body: dict[str, Any], width: int, fps: int) -> bytes:
    """A small real mp4: the input image, cover-cropped to the ratio, slowly zooming in."""
    import imageio.v2 as imageio
    import numpy as np
    from PIL import Image

    rw, rh = (int(v) for v in str(body["ratio"]).split(":"))
    width = max(16, width // 16 * 16)
    height = max(16, round(width * rh / rw / 16) * 16)
    duration = int(body.get("duration", RUNWAY_MODELS[body["model"]].default_duration))
    # Cover-crop to the output aspect ratio.
    target = width / height
    if image.width / image.height > target:
        crop_w = int(image.height * target)
        image = image.crop(
            ((image.width - crop_w) // 2, 0, (image.width - crop_w) // 2 + crop_w, image.height)
        )
    else:
        crop_h = int(image.width / target)
        image = image.crop(
            (0, (image.height - crop_h) // 2, image.width, (image.height - crop_h) // 2 + crop_h)
        )
    frames = []
    count = max(1, duration * fps)
    for i in range(count):
        zoom = 1.0 + 0.15 * i / count
        cw, ch = image.width / zoom, image.height / zoom
        left, top = (image.width - cw) / 2, (image.height - ch) / 2
        frame = image.resize((width, height), Image.Resampling.BILINEAR, box=(left, top, left + cw, top + ch))
        frames.append(np.asarray(frame))
    with tempfile.TemporaryDirectory(prefix="runway-sim-") as tmp:
        path = os.path.join(tmp, "video.mp4")
        with imageio.get_writer(
            path, format="FFMPEG", mode="I", fps=fps, codec="libx264", macro_block_size=16
        ) as w:
            for frame in frames:
                w.append_data(frame)
        with open(path, "rb") as fh:
            return fh.read()


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


class RunwaySimServer:
    """The simulator on 127.0.0.1 in a background thread (a free port unless given).

    Keyword arguments are `SimConfig` fields; `quiet` drops the per-request log lines.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, quiet: bool = True, **config: Any) -> None:
        self.sim = RunwaySim(SimConfig(**config))
        self.host = host
        self.port = port
        self.quiet = quiet
        self._server = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("server not started")
        return f"http://{self.host}:{self._server.server_port}"

    def start(self) -> str:
        handler = _QuietHandler if self.quiet else None
        self._server = make_server(self.host, self.port, self.sim, threaded=True, request_handler=handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="runway-sim", daemon=True)
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def configure(self, **changes: Any) -> SimConfig:
        return self.sim.configure(**changes)

    def stats(self) -> dict[str, Any]:
        return self.sim.snapshot()

    def reset(self) -> None:
        self.sim.reset_stats()

    def __enter__(self) -> RunwaySimServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local Runway-compatible API server (simulated tasks).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds a task spends RUNNING")
    parser.add_argument("--throttled", type=float, default=0.0, help="seconds a task spends THROTTLED first")
    parser.add_argument("--api-key", default=None, help="accepted bearer token (default: any)")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    sim = RunwaySim(SimConfig(duration_s=args.duration, throttled_s=args.throttled, api_key=args.api_key))
    handler = None if args.verbose else _QuietHandler
    server = make_server(args.host, args.port, sim, threaded=True, request_handler=handler)
    print(f"runway simulator listening on http://{args.host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
