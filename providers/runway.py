"""Runway image-to-video through Runway's public REST API (plain `requests`).

One run = at most one Runway task per item attempt: the task id is stored with
`ctx.remember` right after `POST /v1/image_to_video` answers, and a redelivered
message that finds it resumes polling instead of creating a second task. A POST
whose answer is lost (read timeout, dropped connection after sending) is not
re-sent within the attempt; the run fails retryably and the next attempt starts
clean.

Polling follows Runway's task states (PENDING, THROTTLED, RUNNING, SUCCEEDED,
FAILED, CANCELLED). 429, 5xx and connection errors are retried with capped
exponential backoff within the run's deadline. Output URLs expire after a day or
two, so they are downloaded as soon as the task succeeds (without our API key:
they are signed URLs on another host).

The request follows Runway's API as the `runwayml` SDK types it (tests check the
two against each other): `promptText` where a model requires it (gen4.5), `audio`
for the Veo models, prompt length counted in UTF-16 code units as Runway counts
it. The recorded cost is the finished task's `cost` when Runway reports one, else
the estimate from the credits table below. The SDK itself is not used here: it
re-sends a POST on a timeout (a second billed task) and its wait loop does not
stop on CANCELLED.
"""

from __future__ import annotations

import base64
import contextlib
import io
import ipaddress
import logging
import math
import random
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from providers.base import (
    Cancelled,
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
from providers.registry import register

log = logging.getLogger(__name__)

API_VERSION = "2024-11-06"
TASK_KEY = "runway_task_id"
USD_PER_CREDIT = 0.01
MAX_DATA_URI_BYTES = 5 * 1024 * 1024
# Runway fetches an image URL itself only if it is HTTPS, names a domain (not an IP address) and is
# at most this long; anything else is sent inline as a data URI.
MAX_URL_CHARS = 2048
# Runway's limit on promptText, in UTF-16 code units (an emoji counts 2).
PROMPT_MAX_CHARS = 1000
SEED_MAX = 4294967295

GEN4_RATIOS = ("1280:720", "720:1280", "1104:832", "832:1104", "960:960", "1584:672")
VEO_RATIOS = ("1280:720", "720:1280", "1080:1920", "1920:1080")


@dataclass(frozen=True)
class RunwayModel:
    name: str
    label: str
    description: str
    ratios: tuple[str, ...]
    durations: tuple[int, ...]
    default_duration: int
    # Credits per output second (1 credit = USD 0.01), from Runway's published
    # pricing at the time of writing: an estimate, the task's reported `cost` is the truth.
    credits_per_second: float
    seconds_per_item: float
    # Runway refuses a task of this model without promptText.
    prompt_required: bool = False
    # Models that take Runway's `audio` flag (on by default) and their rate without audio.
    credits_per_second_without_audio: float | None = None

    @property
    def takes_audio(self) -> bool:
        return self.credits_per_second_without_audio is not None


MODELS: dict[str, RunwayModel] = {
    m.name: m
    for m in (
        RunwayModel(
            "gen4_turbo",
            "Runway Gen-4 Turbo",
            "Fast, inexpensive image-to-video.",
            GEN4_RATIOS,
            (5, 10),
            5,
            5,
            60,
        ),
        RunwayModel(
            "gen4.5",
            "Runway Gen-4.5",
            "Runway's flagship video model: best motion and prompt adherence.",
            GEN4_RATIOS,
            tuple(range(2, 11)),
            5,
            12,
            120,
            prompt_required=True,
        ),
        RunwayModel(
            "veo3.1",
            "Google Veo 3.1 (via Runway)",
            "Google Veo 3.1 image-to-video, with an audio track unless turned off.",
            VEO_RATIOS,
            (4, 6, 8),
            8,
            40,
            120,
            credits_per_second_without_audio=20,
        ),
        RunwayModel(
            "veo3.1_fast",
            "Google Veo 3.1 Fast (via Runway)",
            "Faster, cheaper Veo 3.1.",
            VEO_RATIOS,
            (4, 6, 8),
            8,
            15,
            60,
            credits_per_second_without_audio=10,
        ),
    )
}

# Runway failure codes that another attempt may fix (internal trouble, capacity).
_TRANSIENT_FAILURE_PREFIXES = ("INTERNAL", "INPUT_PREPROCESSING.INTERNAL", "THROTTLED")


def estimate_credits(model: str, duration: int, audio: bool = True) -> float | None:
    m = MODELS.get(model)
    if m is None:
        return None
    per_second = m.credits_per_second
    if not audio and m.credits_per_second_without_audio is not None:
        per_second = m.credits_per_second_without_audio
    return per_second * duration


def estimate_cost_usd(model: str, duration: int, audio: bool = True) -> float | None:
    credits = estimate_credits(model, duration, audio)
    return None if credits is None else round(credits * USD_PER_CREDIT, 4)


def prompt_length(text: str) -> int:
    """Length as Runway counts it: UTF-16 code units (a character outside the BMP counts 2)."""
    return len(text.encode("utf-16-le")) // 2


def fetchable_by_runway(url: str | None) -> bool:
    """Whether Runway would fetch this image URL itself (its documented rules for input URLs)."""
    if not url or len(url) > MAX_URL_CHARS:
        return False
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    if parts.scheme != "https" or not host:
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        # A name without a dot (localhost, a compose service) cannot be resolved from Runway's side.
        return "." in host
    return False


def failure_is_transient(code: str | None) -> bool:
    if not code:
        return False
    up = code.upper()
    return up.startswith(_TRANSIENT_FAILURE_PREFIXES) or ".INTERNAL" in up


def _sniff_mime(raw: bytes) -> str | None:
    if raw.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if raw.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return "image/webp"
    return None


def _data_uri(mime: str, raw: bytes) -> str:
    return f"data:{mime};base64," + base64.b64encode(raw).decode("ascii")


def image_data_uri(path: Path, limit: int = MAX_DATA_URI_BYTES) -> str:
    """The image as a data URI of at most `limit` bytes: as is when it fits, else re-encoded
    as JPEG (lower quality, then smaller) until it does."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    raw = path.read_bytes()
    try:
        with Image.open(io.BytesIO(raw)) as probe:
            probe.verify()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise FatalError(f"cannot read the input image: {exc}", code="bad_input") from exc
    mime = _sniff_mime(raw)
    if mime is not None and len(mime) + 13 + (len(raw) + 2) // 3 * 4 <= limit:
        return _data_uri(mime, raw)
    with Image.open(io.BytesIO(raw)) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    longest = max(image.size)
    for side in (longest, 4096, 3072, 2048, 1536, 1024, 768, 512):
        if side > longest:
            continue
        scaled = image
        if side < longest:
            scaled = image.copy()
            scaled.thumbnail((side, side))
        for quality in (92, 85, 75, 65):
            buf = io.BytesIO()
            scaled.save(buf, format="JPEG", quality=quality, optimize=True)
            uri = _data_uri("image/jpeg", buf.getvalue())
            if len(uri) <= limit:
                return uri
    raise FatalError("the input image cannot be made small enough for Runway", code="bad_input")


def _error_message(resp: requests.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return (resp.text or resp.reason or "").strip()[:500]
    if not isinstance(body, dict):
        return str(body)[:500]
    message = str(body.get("error") or body.get("message") or body)
    issues = body.get("issues")
    if isinstance(issues, list) and issues:
        details = "; ".join(
            f"{'.'.join(str(p) for p in i.get('path', []))}: {i.get('message')}"
            if isinstance(i, dict)
            else str(i)
            for i in issues
        )
        message = f"{message} ({details})"
    return message[:1000]


def _charged_credits(task: dict[str, Any]) -> float | None:
    """The credits Runway reports for a finished task (`cost.credits`), or None if it reports none."""
    cost = task.get("cost")
    credits = cost.get("credits") if isinstance(cost, dict) else None
    if isinstance(credits, bool) or not isinstance(credits, int | float) or not 0 <= credits < math.inf:
        return None
    return credits


class _Unsent(Exception):
    """A request that certainly never reached the server (safe to send again)."""


class RunwayProvider(Provider):
    name = "runway"
    queue = "runway"
    billed = True
    # Items wait on Runway, not on this host: many at once on threads.
    worker_pool = "threads"
    worker_concurrency = 4
    secret_env = ("RUNWAYML_API_SECRET",)
    label = "Runway"
    description = "Image-to-video through Runway's API (Gen-4 Turbo, Gen-4.5, Veo 3.1)."
    prompt_field = "prompt"
    # Runway's documented limit on promptText (image_to_video): a longer one is refused by the API.
    max_prompt_chars = PROMPT_MAX_CHARS

    def __init__(
        self,
        base_url: str = "https://api.dev.runwayml.com",
        api_key: str | None = None,
        *,
        simulated: bool = False,
        poll_interval_s: float = 5.0,
        connect_timeout_s: float = 10.0,
        request_timeout_s: float = 60.0,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 30.0,
        max_retries: int = 8,
        max_wait_s: float = 3 * 3600.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.demo = simulated
        self.simulated = simulated
        self.poll_interval_s = poll_interval_s
        self.connect_timeout_s = connect_timeout_s
        self.request_timeout_s = request_timeout_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.max_retries = max_retries
        self.max_wait_s = max_wait_s
        # One HTTP session per thread: the runway worker runs a threads pool.
        self._local = threading.local()

    @classmethod
    def from_settings(cls, settings) -> RunwayProvider:
        return cls(
            settings.runway_base_url,
            settings.runway_api_key,
            simulated=settings.runway_simulated,
            poll_interval_s=settings.runway_poll_interval_s,
            request_timeout_s=settings.runway_request_timeout_s,
        )

    # ----- description -------------------------------------------------------------

    def models(self) -> list[ModelInfo]:
        return [
            ModelInfo(
                m.name,
                m.label + (" [simulated]" if self.demo else ""),
                m.description,
                cost_per_item_usd=estimate_cost_usd(m.name, m.default_duration),
                seconds_per_item=m.seconds_per_item,
                constraints={
                    "ratio": list(m.ratios),
                    "duration": list(m.durations),
                    "credits_per_second": m.credits_per_second,
                    "usd_per_credit": USD_PER_CREDIT,
                    "prompt_max_chars": PROMPT_MAX_CHARS,
                    "prompt_required": m.prompt_required,
                }
                | (
                    {"credits_per_second_without_audio": m.credits_per_second_without_audio}
                    if m.takes_audio
                    else {}
                ),
            )
            for m in MODELS.values()
        ]

    def cost(self, model: str, params: dict[str, Any]) -> float:
        """Published price of one item: the model's rate per second of video (lower without audio)."""
        m = MODELS.get(model)
        if m is None:
            return 0.0
        duration = params.get("duration") or m.default_duration
        return estimate_cost_usd(m.name, int(duration), params.get("audio") is not False) or 0.0

    def params(self, model: str) -> list[ParamSpec]:
        m = MODELS.get(model) or MODELS["gen4_turbo"]
        audio: list[ParamSpec] = []
        if m.takes_audio:
            audio = [
                ParamSpec(
                    "audio",
                    "bool",
                    True,
                    f"generate an audio track ({m.credits_per_second:g} credits/s with audio, "
                    f"{m.credits_per_second_without_audio:g} without)",
                )
            ]
        return [
            ParamSpec("ratio", "enum", m.ratios[0], "output width:height in pixels", choices=list(m.ratios)),
            ParamSpec(
                "duration",
                "int",
                m.default_duration,
                "video length in seconds (billed per second)",
                choices=list(m.durations),
            ),
            *audio,
            ParamSpec(
                "seed",
                "int",
                None,
                "random seed (empty: derived from the item, recorded)",
                0,
                SEED_MAX,
                advanced=True,
            ),
        ]

    def check(self, spec: JobSpec) -> JobSpec:
        m = MODELS.get(spec.model)
        if m is None:
            raise ParamError("model", f"unknown Runway model {spec.model!r}; choose one of {sorted(MODELS)}")
        ratio = spec.params.get("ratio")
        if ratio not in m.ratios:
            raise ParamError("params.ratio", f"{m.name} supports ratios {list(m.ratios)}, not {ratio!r}")
        duration = spec.params.get("duration")
        if duration not in m.durations:
            raise ParamError(
                "params.duration", f"{m.name} supports durations {list(m.durations)} s, not {duration!r}"
            )
        if m.prompt_required and not spec.prompt:
            raise ParamError("prompt", f"{m.name} needs a prompt describing the video")
        if spec.prompt and prompt_length(spec.prompt) > PROMPT_MAX_CHARS:
            raise ParamError(
                "prompt",
                f"prompt is {prompt_length(spec.prompt)} UTF-16 code units long (as Runway counts); "
                f"Runway takes at most {PROMPT_MAX_CHARS}",
            )
        return spec

    # ----- HTTP --------------------------------------------------------------------

    def load(self, device: str) -> None:
        self.session  # noqa: B018 - opens this thread's session

    @property
    def session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.api_key}",
            "X-Runway-Version": API_VERSION,
            "Accept": "application/json",
        }

    def _sleep(self, seconds: float, ctx: RunContext) -> None:
        end = time.monotonic() + seconds
        while True:
            ctx.check_cancelled()
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.25))

    def _backoff(self, n: int, resp: requests.Response | None) -> float:
        delay = min(self.backoff_max_s, self.backoff_base_s * (2**n))
        if resp is not None:
            with contextlib.suppress(ValueError):
                delay = max(delay, min(self.backoff_max_s, float(resp.headers.get("Retry-After", ""))))
        return delay * random.uniform(0.8, 1.0)

    def _send(self, method: str, path: str, *, body: dict | None = None) -> requests.Response:
        try:
            return self.session.request(
                method,
                self.base_url + path,
                headers=self._headers(),
                json=body,
                timeout=(self.connect_timeout_s, self.request_timeout_s),
            )
        except requests.ConnectionError as exc:
            if isinstance(exc, requests.ConnectTimeout) or "NewConnectionError" in repr(exc.args):
                raise _Unsent(str(exc)) from exc
            raise

    def _request(
        self, method: str, path: str, ctx: RunContext, *, body: dict | None = None
    ) -> requests.Response:
        """Send with retries for 429 / 5xx / connection trouble; 4xx answers are returned to the caller
        only for 404, else raised as FatalError. A POST is re-sent only when it certainly failed to
        create anything (refused connection, or an HTTP error answer)."""
        once = method == "POST"
        n = 0
        while True:
            resp = None
            try:
                resp = self._send(method, path, body=body)
            except _Unsent as exc:
                problem = f"cannot connect to Runway: {exc}"
            except (requests.ConnectionError, requests.Timeout) as exc:
                if once:
                    raise RetryableError(
                        f"Runway did not answer {method} {path} ({exc.__class__.__name__}); not re-sending it in "
                        "this attempt so no second task is created",
                        code="no_answer",
                    ) from exc
                problem = f"{method} {path}: {exc.__class__.__name__}: {exc}"
            else:
                if resp.status_code < 400 or resp.status_code == 404:
                    return resp
                if resp.status_code in (408, 429) or resp.status_code >= 500:
                    problem = f"{method} {path}: HTTP {resp.status_code} {_error_message(resp)}"
                elif resp.status_code in (401, 403):
                    raise FatalError(
                        f"Runway refused the API key (HTTP {resp.status_code}): {_error_message(resp)}",
                        code="unauthorized",
                    )
                else:
                    raise FatalError(
                        f"Runway rejected the request (HTTP {resp.status_code}): {_error_message(resp)}",
                        code=f"http_{resp.status_code}",
                    )
            delay = self._backoff(n, resp)
            out_of_time = ctx.deadline is not None and time.time() + delay > ctx.deadline
            if n >= self.max_retries or out_of_time:
                code = f"http_{resp.status_code}" if resp is not None else "connection"
                raise RetryableError(f"giving up after {n + 1} tries: {problem}", code=code)
            log.info("runway: %s; retrying in %.2f s", problem, delay)
            self._sleep(delay, ctx)
            n += 1

    def _cancel_remote(self, task_id: str) -> None:
        """Best effort: DELETE the task (a few quick tries), never raising."""
        for n in range(3):
            try:
                resp = self._send("DELETE", f"/v1/tasks/{task_id}")
            except (requests.RequestException, _Unsent) as exc:
                problem = str(exc)
            else:
                if resp.status_code < 500 and resp.status_code != 429:
                    log.info("runway: cancelled task %s (HTTP %s)", task_id, resp.status_code)
                    return
                problem = f"HTTP {resp.status_code}"
            time.sleep(min(self.backoff_max_s, self.backoff_base_s * 2**n))
        log.warning("runway: could not cancel task %s: %s", task_id, problem)

    # ----- running -----------------------------------------------------------------

    def run(self, input_path: Path, spec: JobSpec, ctx: RunContext) -> RunResult:
        ctx.check_cancelled()
        if not self.api_key:
            raise FatalError("no Runway API key configured (RUNWAYML_API_SECRET)", code="no_api_key")
        m = MODELS.get(spec.model)
        if m is None:
            raise FatalError(f"unknown Runway model {spec.model!r}", code="bad_model")
        ratio = spec.params.get("ratio", m.ratios[0])
        duration = int(spec.params.get("duration", m.default_duration))
        audio = bool(spec.params.get("audio", True)) if m.takes_audio else None
        if m.prompt_required and not spec.prompt:
            raise FatalError(f"{m.name} needs a prompt", code="bad_params")
        seed = spec.params.get("seed")
        if seed is None:
            # Deterministic per item attempt: a re-sent request carries the same body.
            seed = zlib.crc32(f"{ctx.item_id}:{ctx.attempt}".encode()) & SEED_MAX
        started = time.monotonic()

        task_id = ctx.recall(TASK_KEY)
        resumed = False
        if task_id:
            resp = self._request("GET", f"/v1/tasks/{task_id}", ctx)
            if resp.status_code == 404:
                log.warning("runway: remembered task %s is gone; creating a new one", task_id)
                task_id = None
            else:
                resumed = True
                log.info("runway: resuming task %s for item %s attempt %s", task_id, ctx.item_id, ctx.attempt)
        if not task_id:
            if fetchable_by_runway(ctx.input_url):
                prompt_image = ctx.input_url
            else:
                prompt_image = image_data_uri(Path(input_path))
            body: dict[str, Any] = {
                "model": m.name,
                "promptImage": prompt_image,
                "ratio": ratio,
                "duration": duration,
                "seed": int(seed),
            }
            if spec.prompt:
                body["promptText"] = spec.prompt
            if audio is not None:
                body["audio"] = audio
            ctx.report_progress(0.01, "submitting to Runway")
            resp = self._request("POST", "/v1/image_to_video", ctx, body=body)
            if resp.status_code == 404:
                raise FatalError(f"Runway answered 404 to POST /v1/image_to_video: {_error_message(resp)}")
            task_id = str(resp.json()["id"])
            try:
                ctx.remember(TASK_KEY, task_id)
            except Exception as exc:
                # Unremembered, a redelivery would create a second task: drop this one.
                self._cancel_remote(task_id)
                raise RetryableError(f"could not record the Runway task id: {exc}", code="remember") from exc
            log.info(
                "runway: created task %s (%s) for item %s attempt %s",
                task_id,
                m.name,
                ctx.item_id,
                ctx.attempt,
            )

        try:
            task, polls = self._poll(task_id, ctx, started)
        except Cancelled:
            self._cancel_remote(task_id)
            raise
        outputs = self._download(task, ctx)
        ctx.report_progress(1.0, "done")
        credits = _charged_credits(task)
        cost_source = "runway"
        if credits is None:
            credits, cost_source = estimate_credits(m.name, duration, audio is not False), "estimate"
        return RunResult(
            outputs=outputs,
            meta={
                "remote_id": task_id,
                "resumed": resumed,
                "model": m.name,
                "ratio": ratio,
                "duration": duration,
                "seed": int(seed),
                "audio": audio,
                "credits": credits,
                "cost_usd": round(credits * USD_PER_CREDIT, 4) if credits is not None else None,
                "cost_source": cost_source,
                "polls": polls,
                "wall_s": round(time.monotonic() - started, 3),
                "simulated": self.demo,
            },
        )

    def _poll(self, task_id: str, ctx: RunContext, started: float) -> tuple[dict[str, Any], int]:
        polls = 0
        while True:
            ctx.check_cancelled()
            now = time.time()
            if (
                ctx.deadline is not None and now > ctx.deadline
            ) or time.monotonic() - started > self.max_wait_s:
                self._cancel_remote(task_id)
                raise RetryableError(f"Runway task {task_id} did not finish in time", code="deadline")
            resp = self._request("GET", f"/v1/tasks/{task_id}", ctx)
            polls += 1
            if resp.status_code == 404:
                raise RetryableError(f"Runway task {task_id} vanished (HTTP 404)", code="task_gone")
            task = resp.json()
            status = str(task.get("status", "")).upper()
            if status == "SUCCEEDED":
                return task, polls
            if status == "FAILED":
                code = task.get("failureCode") or "UNKNOWN"
                message = f"Runway task failed: {task.get('failure') or 'no reason given'} [{code}]"
                if failure_is_transient(code):
                    raise RetryableError(message, code=code)
                raise FatalError(message, code=code)
            if status == "CANCELLED":
                raise FatalError(f"Runway task {task_id} was cancelled on Runway's side", code="CANCELLED")
            if status == "RUNNING":
                progress = task.get("progress")
                try:
                    fraction = min(1.0, max(0.0, float(progress)))
                except (TypeError, ValueError):
                    fraction = 0.0
                ctx.report_progress(0.05 + 0.85 * fraction, f"running {round(fraction * 100)}%")
            else:
                ctx.report_progress(0.02, status.lower() or "waiting")
            self._sleep(self.poll_interval_s, ctx)

    def _download(self, task: dict[str, Any], ctx: RunContext) -> list[OutputFile]:
        urls = [u for u in task.get("output") or [] if isinstance(u, str)]
        if not urls:
            raise RetryableError("Runway reported success without output URLs", code="no_output")
        outputs = []
        for i, url in enumerate(urls):
            ctx.report_progress(0.9 + 0.1 * i / len(urls), "downloading")
            suffix = ".mp4"
            tail = url.split("?", 1)[0].rsplit("/", 1)[-1]
            if "." in tail and len(tail.rsplit(".", 1)[1]) <= 4:
                suffix = "." + tail.rsplit(".", 1)[1].lower()
            role = "video" if i == 0 else f"video_{i + 1}"
            path = ctx.workdir / f"{role}{suffix}"
            content_type = self._fetch(url, path, ctx)
            if not content_type.startswith("video/"):
                content_type = "video/mp4" if suffix == ".mp4" else content_type
            outputs.append(OutputFile(path, content_type, role))
        return outputs

    def _fetch(self, url: str, path: Path, ctx: RunContext) -> str:
        """Download a signed output URL (no API key: it is another host) with retries."""
        part = path.with_name(path.name + ".part")
        n = 0
        while True:
            ctx.check_cancelled()
            try:
                with requests.get(
                    url, stream=True, timeout=(self.connect_timeout_s, self.request_timeout_s)
                ) as resp:
                    if resp.status_code == 200:
                        with open(part, "wb") as fh:
                            for chunk in resp.iter_content(1 << 20):
                                fh.write(chunk)
                        part.replace(path)
                        return resp.headers.get("Content-Type", "video/mp4").split(";")[0].strip()
                    if resp.status_code not in (408, 429) and resp.status_code < 500:
                        raise RetryableError(
                            f"downloading Runway output failed: HTTP {resp.status_code}", code="download"
                        )
                    problem = f"HTTP {resp.status_code}"
            except requests.RequestException as exc:
                problem = f"{exc.__class__.__name__}: {exc}"
            if n >= self.max_retries:
                raise RetryableError(f"downloading Runway output failed: {problem}", code="download")
            self._sleep(self._backoff(n, None), ctx)
            n += 1


register(RunwayProvider)
