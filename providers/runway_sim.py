"""A local server speaking the documented part of Runway's API, with fault knobs.

Used by the embedded default stack (no Runway key needed) and by tests:

    python -m providers.runway_sim --port 8099

    server = RunwaySimServer(duration_s=0.2).start()   # -> "http://127.0.0.1:PORT"
    ...
    server.stop()

Endpoints (Runway API version 2024-11-06):

* `POST /v1/image_to_video`: checks the bearer token, `X-Runway-Version`, model,
  ratio, duration, seed, promptText and `promptImage` (data URI up to 5 MB or an
  http(s) URL); answers `{"id"}`, or 400 with `{"error", "issues"}`.
* `GET /v1/tasks/{id}`: PENDING / THROTTLED -> RUNNING (with `progress`) ->
  SUCCEEDED (`output`: a small real mp4 made from the input image, served by this
  server) or FAILED (`failure`, `failureCode`); CANCELLED after a DELETE.
* `DELETE /v1/tasks/{id}`: cancels a running task, deletes a finished one (204).

Test hooks: `POST /_sim/config` (JSON of `SimConfig` fields), `GET /_sim/stats`,
`POST /_sim/reset`, or the same through the `RunwaySimServer` object.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import io
import json
import os
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any

from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from providers.runway import API_VERSION, MAX_DATA_URI_BYTES, MODELS, PROMPT_MAX_CHARS, SEED_MAX


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
    cancelled: bool = False
    deleted: bool = False
    video: bytes | None = None
    render_error: str | None = None


class RunwaySim:
    """The WSGI application and its state."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.lock = threading.Lock()
        self.tasks: dict[str, _Task] = {}
        self.answers_held: set[str] = set()  # images whose create answer was held back
        self.stats: dict[str, Any] = {}
        self.reset_stats()
        self.urls = Map(
            [
                Rule("/v1/image_to_video", endpoint="create", methods=["POST"]),
                Rule("/v1/tasks/<task_id>", endpoint="get_task", methods=["GET"]),
                Rule("/v1/tasks/<task_id>", endpoint="delete_task", methods=["DELETE"]),
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
            self.stats = {
                "tasks_created": 0,
                "tasks_by_prompt": {},
                "tasks_by_seed": {},
                "deletes": 0,
                "cancelled": 0,
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
            out["tasks"] = {
                t.id: {
                    "status": self._status(t)[0],
                    "model": t.body.get("model"),
                    "ratio": t.body.get("ratio"),
                    "duration": t.body.get("duration"),
                    "seed": t.body.get("seed"),
                    "promptText": t.body.get("promptText"),
                    "deleted": t.deleted,
                }
                for t in self.tasks.values()
            }
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
        issues = _validate(body)
        if issues:
            first = issues[0]
            return _json({"error": f"Validation of body failed: {first['message']}", "issues": issues}, 400)
        now = time.monotonic()
        with self.lock:
            cfg = self.config
            task = _Task(
                id=str(uuid.uuid4()),
                created=now,
                created_at=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                body=body,
                throttled_s=cfg.throttled_s,
                pending_s=cfg.pending_s,
                duration_s=cfg.duration_s,
                fail_code=cfg.fail_code,
                fail_message=cfg.fail_message,
            )
            self.tasks[task.id] = task
            self.stats["tasks_created"] += 1
            prompt = str(body.get("promptText", ""))
            self.stats["tasks_by_prompt"][prompt] = self.stats["tasks_by_prompt"].get(prompt, 0) + 1
            if "seed" in body:
                seed = str(body["seed"])
                self.stats["tasks_by_seed"][seed] = self.stats["tasks_by_seed"].get(seed, 0) + 1
            hold = 0.0
            image = hashlib.sha256(str(body.get("promptImage", "")).encode()).hexdigest()
            if cfg.answer_delay_count > 0 and image not in self.answers_held:
                self.answers_held.add(image)
                cfg.answer_delay_count -= 1
                hold = cfg.answer_delay_s
                self.stats["faults_served"]["answer_delayed"] += 1
        if hold:
            time.sleep(hold)
        return _json({"id": task.id})

    def _status(self, task: _Task) -> tuple[str, float]:
        if task.cancelled:
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
                video = _render_video(task.body, self.config.video_width, self.config.video_fps)
            except Exception as exc:  # a bad asset fails the task, as Runway does
                with self.lock:
                    task.render_error = f"Could not process the input image: {exc}"
            else:
                with self.lock:
                    task.video = video
            with self.lock:
                status, progress = self._status(task)
        doc: dict[str, Any] = {"id": task.id, "status": status, "createdAt": task.created_at}
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
                task.cancelled = True
                self.stats["cancelled"] += 1
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


def _json(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(doc), status=status, mimetype="application/json", headers=headers)


def _issue(path: str, message: str) -> dict[str, Any]:
    return {"path": [path], "message": message}


def _validate(body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, dict):
        return [_issue("body", "Expected a JSON object")]
    issues = []
    model = MODELS.get(body.get("model"))  # type: ignore[arg-type]
    if model is None:
        issues.append(
            _issue("model", f"Invalid model {body.get('model')!r}; expected one of {sorted(MODELS)}")
        )
    image = body.get("promptImage")
    if not isinstance(image, str) or not image:
        issues.append(_issue("promptImage", "Required: an HTTPS URL or a data URI"))
    elif image.startswith("data:"):
        if len(image) > MAX_DATA_URI_BYTES:
            issues.append(_issue("promptImage", "Data URIs must be at most 5 MB"))
        elif not image.startswith(
            ("data:image/png;base64,", "data:image/jpeg;base64,", "data:image/webp;base64,")
        ):
            issues.append(_issue("promptImage", "Data URIs must be base64 PNG, JPEG or WebP images"))
        else:
            try:
                base64.b64decode(image.split(",", 1)[1], validate=True)
            except (binascii.Error, ValueError):
                issues.append(_issue("promptImage", "Invalid base64 in data URI"))
    elif not image.startswith(("https://", "http://")):
        issues.append(_issue("promptImage", "Expected an HTTPS URL or a data URI"))
    if model is not None:
        if body.get("ratio") not in model.ratios:
            issues.append(
                _issue(
                    "ratio",
                    f"Invalid ratio {body.get('ratio')!r} for {model.name}; expected one of {list(model.ratios)}",
                )
            )
        duration = body.get("duration", model.default_duration)
        if isinstance(duration, bool) or duration not in model.durations:
            issues.append(
                _issue(
                    "duration",
                    f"Invalid duration {duration!r} for {model.name}; expected one of {list(model.durations)}",
                )
            )
    text = body.get("promptText")
    if text is not None and (not isinstance(text, str) or len(text) > PROMPT_MAX_CHARS):
        issues.append(
            _issue("promptText", f"promptText must be a string of at most {PROMPT_MAX_CHARS} characters")
        )
    seed = body.get("seed")
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX
    ):
        issues.append(_issue("seed", f"seed must be an integer between 0 and {SEED_MAX}"))
    return issues


def _load_image(source: str):
    from PIL import Image, ImageOps

    if source.startswith("data:"):
        raw = base64.b64decode(source.split(",", 1)[1])
    else:
        import requests

        resp = requests.get(source, timeout=10)
        resp.raise_for_status()
        raw = resp.content
    with Image.open(io.BytesIO(raw)) as opened:
        return ImageOps.exif_transpose(opened).convert("RGB")


def _render_video(body: dict[str, Any], width: int, fps: int) -> bytes:
    """A small real mp4: the input image, cover-cropped to the ratio, slowly zooming in."""
    import imageio.v2 as imageio
    import numpy as np
    from PIL import Image

    rw, rh = (int(v) for v in str(body["ratio"]).split(":"))
    width = max(16, width // 16 * 16)
    height = max(16, round(width * rh / rw / 16) * 16)
    model = MODELS[body["model"]]
    duration = int(body.get("duration", model.default_duration))
    image = _load_image(body["promptImage"])
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
