"""The item task every provider queue runs.

The message carries everything the worker needs (GPU hosts have no database).
Before any GPU work: drop stale or cancelled deliveries, replay a finished attempt
from its manifest, take the lease. Then download, run, upload outputs under the
attempt's prefix, and write the manifest last: it is the attempt's commit marker.
"""

from __future__ import annotations

import contextlib
import json
import logging
import mimetypes
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import kombu.exceptions
import redis

from app.config import settings
from app.coordination import Coordination, Lease, redis_client
from app.storage import InvalidKey, NotFound
from app.storage_factory import get_storage, manifest_key, output_prefix
from providers import Cancelled, FatalError, JobSpec, ProviderError, RetryableError, RunContext
from tasks import runtime
from tasks.celery_app import celery
from tasks.reports import publish_report

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 0.5
T = TypeVar("T")


class LeaseLost(Exception):
    """Another delivery took this item over (our lease expired): stop quietly."""


class Heartbeat(threading.Thread):
    def __init__(self, coord: Coordination, lease: Lease, ttl_s: float, every_s: float) -> None:
        super().__init__(daemon=True, name=f"lease-{lease.item_id[:8]}")
        self.coord, self.lease, self.ttl_s, self.every_s = coord, lease, ttl_s, every_s
        self.stopped = threading.Event()
        self.lost = False

    def run(self) -> None:
        while not self.stopped.wait(self.every_s):
            try:
                if not self.coord.renew(self.lease, self.ttl_s):
                    self.lost = True
                    return
            except Exception as exc:  # noqa: BLE001 - Redis away: keep working, retry next beat
                log.warning("lease renewal for %s failed: %s", self.lease.item_id, exc)

    def stop(self) -> None:
        self.stopped.set()


def classify_model_error(exc: Exception) -> ProviderError:
    """An untyped exception from inside a provider: infrastructure may pass, a model bug will not."""
    name = type(exc).__name__
    message = f"{name}: {exc}"
    if name == "OutOfMemoryError" or isinstance(
        exc, OSError | redis.RedisError | kombu.exceptions.OperationalError
    ):
        return RetryableError(message, code=name)
    return FatalError(message, code=name)


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, ProviderError):
        return exc.retryable
    # Outside the model call (provider errors are typed) trouble is infrastructure:
    # Redis, storage, the network. Another attempt may well succeed.
    return True


def report_failure(payload: dict[str, Any], exc: BaseException, worker: str) -> None:
    """The attempt's failure, recorded as its outcome; marks the exception as reported."""
    publish_report(
        payload,
        "failed",
        final=True,
        error=f"{exc}" or type(exc).__name__,
        error_code=getattr(exc, "code", None) or type(exc).__name__,
        retryable=is_retryable(exc),
        worker=worker,
    )
    with contextlib.suppress(AttributeError):
        exc.bulkgen_reported = True  # type: ignore[attr-defined]


def _worker_name(task: Any) -> str:
    return f"{task.request.hostname or 'worker'}/{os.getpid()}"


@celery.task(name="items.run", bind=True, acks_late=True, reject_on_worker_lost=True)
def run_item(self: Any, payload: dict[str, Any]) -> dict[str, Any]:
    return ItemRun(self, payload).execute()


class ItemRun:
    def __init__(self, task: Any, payload: dict[str, Any]) -> None:
        self.task = task
        self.payload = payload
        self.item_id: str = payload["item_id"]
        self.job_id: str = payload["job_id"]
        self.attempt: int = payload["attempt"]
        self.worker = _worker_name(task)
        self.coord = Coordination(redis_client(settings().broker_url))
        self.store = get_storage()
        self.heartbeat: Heartbeat | None = None
        self.deadline = time.time() + float(payload.get("deadline_s") or settings().item_deadline_s)
        self._last_progress = 0.0
        self._last_message: str | None = None  # where the run was, for the log when it stops

    def execute(self) -> dict[str, Any]:
        cancelled, current = self.coord.delivery_state(self.item_id)
        if cancelled:
            return {"outcome": "cancelled", "worker": self.worker}
        if current is not None and self.attempt < current:
            log.info(
                "dropping stale delivery of item %s attempt %d (now %d)", self.item_id, self.attempt, current
            )
            return {"outcome": "skipped", "reason": f"stale attempt {self.attempt} < {current}"}
        finished = self._manifest()
        if finished is not None:
            return {"outcome": "succeeded", "replayed": True, **finished}
        ttl, every = runtime.lease_settings()
        lease = self.coord.acquire(self.item_id, self.attempt, self.worker, ttl)
        if lease is None:
            log.info("item %s is held by another delivery; dropping this one", self.item_id)
            return {"outcome": "skipped", "reason": "lease held elsewhere"}
        self.heartbeat = Heartbeat(self.coord, lease, ttl, every)
        self.heartbeat.start()
        started = time.monotonic()
        try:
            publish_report(self.payload, "running", worker=self.worker, device=runtime.device_description())
            return self._run(started)
        except Cancelled:
            log.info(
                "item %s attempt %d stopped by cancel at %s",
                self.item_id,
                self.attempt,
                self._last_message or "the start",
            )
            return {"outcome": "cancelled", "worker": self.worker}
        except LeaseLost:
            return {"outcome": "skipped", "reason": "lease lost to another delivery"}
        except Exception as exc:
            # Reported while the lease is still held: the reconciler then never mistakes this
            # failure for a lost worker (which would retry a failure that is not retryable).
            if not self.heartbeat.lost:
                report_failure(self.payload, exc, self.worker)
            raise
        finally:
            self.heartbeat.stop()
            if not self.heartbeat.lost:
                try:
                    self.coord.release(lease)
                except Exception as exc:  # noqa: BLE001 - it expires by itself
                    log.warning("could not release lease of %s: %s", self.item_id, exc)

    def _manifest(self) -> dict[str, Any] | None:
        key = manifest_key(self.job_id, self.item_id, self.attempt)
        if not self._storage("look for a manifest", lambda: self.store.exists(key)):
            return None
        return json.loads(self._storage("read the manifest", lambda: self.store.get_bytes(key)))

    def _run(self, started: float) -> dict[str, Any]:
        provider = runtime.loaded_provider(self.payload["provider"])
        spec = JobSpec(
            model=self.payload["model"],
            prompt=self.payload.get("prompt"),
            prompts=list(self.payload.get("prompts") or []),
            params=dict(self.payload.get("params") or {}),
        )
        with tempfile.TemporaryDirectory(prefix="item-") as tmp:
            workdir = Path(tmp)
            input_path = self._download(workdir)
            ctx = RunContext(
                item_id=self.item_id,
                attempt=self.attempt,
                workdir=workdir,
                report_progress=self._progress,
                check_cancelled=self._check,
                remember=lambda k, v: self.coord.remember(self.item_id, self.attempt, k, v),
                recall=lambda k: self.coord.recall(self.item_id, self.attempt, k),
                deadline=self.deadline,
                input_url=self._input_url(),
            )
            # No cancel check here: the delivery was checked a moment ago and providers check
            # before their first step.
            model_started = time.monotonic()
            try:
                result = provider.run(input_path, spec, ctx)
            except (ProviderError, Cancelled, LeaseLost):
                raise
            except Exception as exc:
                raise classify_model_error(exc) from exc
            model_ms = (time.monotonic() - model_started) * 1000
            self._check()
            prefix = output_prefix(self.job_id, self.item_id, self.attempt)
            outputs = []
            for out in result.outputs:
                suffix = out.path.suffix or (mimetypes.guess_extension(out.content_type) or "")
                key = f"{prefix}{out.role}{suffix}"
                self._storage(
                    f"upload {key}", lambda k=key, o=out: self.store.put_file(k, o.path, o.content_type)
                )
                outputs.append(
                    {
                        "key": key,
                        "content_type": out.content_type,
                        "role": out.role,
                        "size": out.path.stat().st_size,
                    }
                )
        duration_ms = (time.monotonic() - started) * 1000
        manifest = {
            "item_id": self.item_id,
            "job_id": self.job_id,
            "attempt": self.attempt,
            "outputs": outputs,
            "meta": {
                **result.meta,
                "model_ms": round(model_ms, 3),
                "overhead_ms": round(duration_ms - model_ms, 3),
            },
            "worker": self.worker,
            "duration_ms": round(duration_ms, 3),
            "finished_at": time.time(),
        }
        key = manifest_key(self.job_id, self.item_id, self.attempt)
        body = json.dumps(manifest).encode()
        self._storage(f"write {key}", lambda: self.store.put_bytes(key, body, "application/json"))
        return {"outcome": "succeeded", **manifest}

    def _storage(self, what: str, call: Callable[[], T]) -> T:
        """Storage trouble is usually brief: retry with backoff (checking cancel) before the attempt fails."""
        deadline = time.monotonic() + settings().storage_retry_s
        delay = 0.5
        while True:
            try:
                return call()
            except (NotFound, InvalidKey):
                raise
            except Exception as exc:
                if time.monotonic() + delay > deadline:
                    raise RetryableError(
                        f"storage unavailable while trying to {what}: {exc}", code="storage"
                    ) from exc
                log.warning("storage error while trying to %s (retrying in %.1f s): %s", what, delay, exc)
                time.sleep(delay)
                if self.heartbeat is not None:
                    self._check()
                delay = min(delay * 2, 8.0)

    def _download(self, workdir: Path) -> Path:
        key = self.payload["input_key"]
        path = workdir / ("input" + Path(key).suffix.lower())
        if not self._storage(f"find input {key}", lambda: self.store.exists(key)):
            raise FatalError(f"input {key} is missing from storage", code="input_missing")
        self._storage(f"download input {key}", lambda: self.store.download_to(key, path))
        return path

    def _input_url(self) -> str | None:
        try:
            return self.store.signed_url(self.payload["input_key"], expires_s=3600)
        except Exception:  # noqa: BLE001 - only remote providers use it
            return None

    def _check(self) -> None:
        if self.heartbeat is not None and self.heartbeat.lost:
            raise LeaseLost()
        try:
            cancelled = self.coord.is_cancelled(self.item_id)
        except Exception:  # noqa: BLE001 - Redis away: keep going, the control side fences results
            cancelled = False
        if cancelled:
            raise Cancelled()
        if time.time() > self.deadline:
            raise RetryableError("the item ran past its deadline", code="deadline")

    def _progress(self, fraction: float, message: str | None = None) -> None:
        self._last_message = message or self._last_message
        now = time.monotonic()
        if now - self._last_progress < PROGRESS_EVERY_S and fraction < 1.0:
            return
        self._last_progress = now
        try:
            self.task.update_state(
                state="PROGRESS",
                meta={
                    "progress": round(max(0.0, min(1.0, fraction)), 4),
                    "message": message,
                    "attempt": self.attempt,
                },
            )
        except Exception as exc:  # noqa: BLE001 - progress is best effort
            log.debug("progress update failed: %s", exc)
