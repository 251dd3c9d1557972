"""The item task every provider queue runs, in phases.

admit → fetch the input → start (take the lease, say running) → run the model → commit (upload
outputs, write the manifest last, report succeeded). The message carries everything the worker
needs (GPU hosts have no database). GPU workers run these phases as a pipeline (tasks/lanes.py):
the next item's input is fetched while the model runs, and outputs upload while the next item
runs. The Runway worker runs them in order (`ItemRun.execute`). Every outcome is reported here,
by the phase that sees it; tasks/signals.py only catches what escaped.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import kombu.exceptions
import redis
from celery.exceptions import Reject, TaskPredicate
from pydantic import ValidationError

from app.broker import RUN_ITEM
from app.config import settings
from app.contract.wire import (
    CancelledReport,
    FailedReport,
    ItemMessage,
    Manifest,
    OutputEntry,
    RunningReport,
    SucceededReport,
)
from app.coordination import Coordination, Lease, redis_client
from app.storage import InvalidKey, NotFound
from app.storage_factory import manifest_key, output_prefix
from providers import (
    Cancelled,
    FatalError,
    JobSpec,
    Provider,
    ProviderError,
    RetryableError,
    RunContext,
    RunResult,
)
from tasks import runtime
from tasks.celery_app import celery
from tasks.grants import GrantDenied, HostRefused, ItemStorage, stop_host
from tasks.reports import publish_report, report_fields

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 0.5
# How CUDA reports a device fault (after which the process's CUDA context is unusable).
CUDA_FAULTS = ("CUDA error", "CUBLAS_STATUS", "cuDNN error", "device-side assert")
T = TypeVar("T")


class ItemFailed(Exception):
    """Raised by the item task after the body reported the failure, so Celery and Flower show the
    task as FAILURE. Carries the outcome; tasks/signals.py leaves it alone (already reported)."""

    def __init__(self, outcome: dict[str, Any]) -> None:
        super().__init__(f"{outcome.get('error_code')}: {outcome.get('error')}")
        self.outcome = outcome


class LeaseLost(Exception):
    """Another delivery took this item over (our lease expired): stop quietly."""


@dataclass(eq=False)
class HeldLease:
    """A lease this process keeps renewed; `lost` once another delivery took the item over."""

    coord: Coordination
    lease: Lease
    ttl_s: float
    lost: bool = False
    stopped: bool = False

    def stop(self) -> None:
        self.stopped = True


class LeaseKeeper:
    """One thread renewing every lease this process holds, in one Redis round trip per beat (a
    thread per item would cost its start-up on the path between two model runs)."""

    def __init__(self) -> None:
        self._held: set[HeldLease] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def keep(self, coord: Coordination, lease: Lease, ttl_s: float, every_s: float) -> HeldLease:
        held = HeldLease(coord, lease, ttl_s)
        with self._lock:
            self._held.add(held)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, args=(every_s,), daemon=True, name="leases")
                self._thread.start()
        return held

    def _run(self, every_s: float) -> None:
        while True:
            time.sleep(every_s)
            with self._lock:
                self._held = {h for h in self._held if not h.stopped and not h.lost}
                held = list(self._held)
            if not held:
                continue
            try:
                renewed = held[0].coord.renew_many([(h.lease, h.ttl_s) for h in held])
            except Exception as exc:  # noqa: BLE001 - Redis away: keep working, retry next beat
                log.warning("renewing %d leases failed: %s", len(held), exc)
                continue
            for h, ok in zip(held, renewed, strict=True):
                if not ok and not h.stopped:
                    h.lost = True


LEASES = LeaseKeeper()


def classify_model_error(exc: BaseException) -> BaseException:
    """An exception from inside a provider, typed: infrastructure may pass, a model bug will not."""
    if isinstance(exc, ProviderError | Cancelled | LeaseLost):
        return exc
    name = type(exc).__name__
    message = f"{name}: {exc}"
    if isinstance(exc, RuntimeError) and any(sign in str(exc) for sign in CUDA_FAULTS):
        # The device or its context failed, not this input: another process may well succeed.
        return RetryableError(message, code="cuda_error")
    if name == "OutOfMemoryError" or isinstance(
        exc, OSError | redis.RedisError | kombu.exceptions.OperationalError
    ):
        return RetryableError(message, code="oom" if name == "OutOfMemoryError" else name)
    return FatalError(message, code=name)


def is_out_of_memory(exc: BaseException) -> bool:
    return getattr(exc, "code", None) == "oom" or type(exc).__name__ == "OutOfMemoryError"


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, ProviderError):
        return exc.retryable
    # Outside the model call (provider errors are typed) trouble is infrastructure:
    # Redis, storage, the network. Another attempt may well succeed.
    return True


def refuse_delivery(exc: HostRefused) -> Reject:
    """This host's token was refused before the item started: the message goes back to the queue
    for a host with a valid token, and this one stops taking items."""
    stop_host(str(exc))
    return Reject(str(exc), requeue=True)


def report_failure(message: ItemMessage, exc: BaseException, worker: str) -> dict[str, Any]:
    """The attempt's failure, recorded as its outcome; returns the task's result saying so."""
    error = f"{exc}" or type(exc).__name__
    code = getattr(exc, "code", None) or type(exc).__name__
    publish_report(
        FailedReport(
            **report_fields(message),
            state="failed",
            error=error,
            error_code=code,
            retryable=is_retryable(exc),
            worker=worker,
        )
    )
    return {"outcome": "failed", "error_code": code, "error": error}


@celery.task(name=RUN_ITEM, bind=True, acks_late=True, reject_on_worker_lost=True)
def run_item(self: Any, body: Any) -> dict[str, Any]:
    """Run one delivery of one item and report its outcome, whatever it is.

    Every outcome this body sees is reported here. The result says what happened; a failure, once
    reported, is raised as `ItemFailed` so Flower shows the task as failed. tasks/signals.py reports
    only what escapes this body."""
    from tasks import lanes

    message = ItemMessage.parse(body)
    if message is None:
        # Nothing to speak for: a report needs the message's item and proof. The item, if it is
        # one, is published again by the reconciler.
        return {"outcome": "dropped", "reason": "the message does not parse"}
    run = ItemRun(self, message)
    pipeline = lanes.current()
    try:
        outcome = run.execute() if pipeline is None else pipeline.run(run)
    except TaskPredicate:
        raise  # Reject: the message goes back to the queue, nothing happened to the item
    except Exception as exc:  # noqa: BLE001 - the outcome of this attempt, whatever raised it
        outcome = run.fail(exc)
    if outcome.get("outcome") == "failed":
        raise ItemFailed(outcome)
    return outcome


class ItemRun:
    """One delivery of one item's attempt."""

    def __init__(self, task: Any, message: ItemMessage) -> None:
        self.task = task
        self.message = message
        self.item_id = message.item_id
        self.job_id = message.job_id
        self.attempt = message.attempt
        self.provider = message.provider
        self.model = message.model
        self.spec = JobSpec(
            model=message.model,
            prompt=message.prompt,
            prompts=list(message.prompts),
            params=dict(message.params),
        )
        delivery = getattr(task.request, "delivery_info", None) or {}
        # Only a message seen before can find its attempt already committed in storage.
        self.redelivered = bool(delivery.get("redelivered") or message.redelivery)
        self.worker = f"{task.request.hostname or 'worker'}/{os.getpid()}"
        self.device = ""
        self.coord = Coordination(redis_client(settings().broker_url))
        # No storage keys on this host: presigned URLs for this item and attempt only.
        self.store = ItemStorage(message)
        self.heartbeat: HeldLease | None = None
        self.lease: Lease | None = None
        # Counted from the start (a prefetched item may wait behind others first).
        self.deadline_s = float(message.deadline_s or settings().item_deadline_s)
        self.deadline = time.time() + self.deadline_s
        self.workdir: Path | None = None
        self.input_path: Path | None = None
        # A failure while fetching the input is reported once the item has started (it is `queued`).
        self.fetch_error: BaseException | None = None
        # The web app refused this delivery storage access: it stops before the lease.
        self.denied: GrantDenied | None = None
        self.ctx: RunContext | None = None
        self.started = 0.0
        self._last_progress = 0.0
        self._last_message: str | None = None  # where the run was, for the log when it stops

    # --- phases --------------------------------------------------------------------------------

    def admit(self) -> dict[str, Any] | None:
        """Before any work: None to go on, else the outcome of a delivery that has nothing to do."""
        cancelled, current, finished, token = self.coord.delivery_state(self.item_id, self.attempt)
        if cancelled:
            return self._cancelled()
        if current is not None and self.attempt < current:
            log.info(
                "dropping stale delivery of item %s attempt %d (now %d)", self.item_id, self.attempt, current
            )
            return {"outcome": "skipped", "reason": f"stale attempt {self.attempt} < {current}"}
        if finished:
            return {"outcome": "skipped", "reason": "this attempt already finished"}
        mine = self.message.dispatch
        if mine and token is not None and token != mine:
            # Taken back out of the window, or published again since: not this message's to run
            # (start checks it again, atomically, for what changes meanwhile).
            why = "taken back out of the window" if token == "recalled" else "published again since"
            log.info("dropping delivery of item %s attempt %d: %s", self.item_id, self.attempt, why)
            return {"outcome": "skipped", "reason": "recalled"}
        if self.redelivered:
            try:
                manifest = self._manifest()
            except GrantDenied as exc:
                log.info("dropping delivery of item %s attempt %d: %s", self.item_id, self.attempt, exc)
                return {"outcome": "skipped", "reason": exc.code}
            if manifest is not None:
                self._report_succeeded(manifest, detail="replayed from manifest")
                return {"outcome": "succeeded", "replayed": True}
        return None

    def fetch_input(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="item-"))
        key = self.message.input_key
        path = self.workdir / ("input" + Path(key).suffix.lower())
        try:
            self._storage(f"download input {key}", lambda: self.store.download_input(path))
        except HostRefused:
            raise
        except GrantDenied as exc:
            # Not a delivery the system stands behind (taken back, superseded, cancelled, or a
            # message without its item's proof): it must not take the lease.
            self.denied = exc
        except NotFound as exc:
            self.fetch_error = FatalError(f"input {key} is missing from storage", code="input_missing")
            self.fetch_error.__cause__ = exc
        except Exception as exc:  # noqa: BLE001 - reported as the attempt's outcome once started
            self.fetch_error = exc
        else:
            self.input_path = path
        # Made here, off the device's path (an S3 input URL is signed on the way).
        self.ctx = self.context()

    def start(self, worker: str, device: str) -> dict[str, Any] | None:
        """Take the lease and say running (one Redis round trip): None when started, else why this
        delivery stops here."""
        self.worker, self.device = worker, device
        if self.denied is not None:
            log.info("item %s attempt %d not started here: %s", self.item_id, self.attempt, self.denied)
            return {"outcome": "skipped", "reason": self.denied.code}
        ttl, every = runtime.lease_settings()
        # Appended by the same Redis call that takes the lease.
        running = RunningReport(
            **report_fields(self.message), state="running", worker=self.worker, device=device
        )
        answer, lease = self.coord.start(
            self.item_id,
            self.attempt,
            self.worker,
            ttl,
            running.wire(),
            token=str(self.message.dispatch or ""),
        )
        if answer == "cancelled":
            return self._cancelled()
        if lease is None:
            log.info("item %s attempt %d not started here: %s", self.item_id, self.attempt, answer)
            return {"outcome": "skipped", "reason": answer}
        self.lease = lease
        self.heartbeat = LEASES.keep(self.coord, lease, ttl, every)
        self.started = time.monotonic()
        self.deadline = time.time() + self.deadline_s
        if self.ctx is not None:
            self.ctx.deadline = self.deadline
        return None

    def context(self) -> RunContext:
        assert self.workdir is not None
        return RunContext(
            item_id=self.item_id,
            attempt=self.attempt,
            workdir=self.workdir,
            report_progress=self._progress,
            check_cancelled=self.check,
            remember=lambda k, v: self.coord.remember(self.item_id, self.attempt, k, v),
            recall=lambda k: self.coord.recall(self.item_id, self.attempt, k),
            deadline=self.deadline,
            input_url=self.store.input_url,
        )

    def run_model(self, provider: Provider) -> tuple[RunResult, float]:
        """The provider's run on this item alone; (result, model milliseconds)."""
        if self.fetch_error is not None:
            raise self.fetch_error
        assert self.input_path is not None
        started = time.monotonic()
        try:
            result = provider.run(self.input_path, self.spec, self.ctx or self.context())
        except Exception as exc:
            raise classify_model_error(exc) from exc
        return result, (time.monotonic() - started) * 1000

    def commit(
        self, result: RunResult, model_ms: float, extra_meta: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Upload the outputs, write the manifest last (the attempt's commit marker), report it."""
        self.check()
        prefix = output_prefix(self.job_id, self.item_id, self.attempt)
        keys = [
            f"{prefix}{out.role}{out.path.suffix or (mimetypes.guess_extension(out.content_type) or '')}"
            for out in result.outputs
        ]
        mkey = manifest_key(self.job_id, self.item_id, self.attempt)
        urls = self._write_grant(
            [*zip(keys, [o.content_type for o in result.outputs], strict=True), (mkey, "application/json")]
        )
        outputs = []
        for key, out in zip(keys, result.outputs, strict=True):
            self._storage(
                f"upload {key}", lambda k=key, o=out: self.store.put(urls[k], o.path, o.content_type)
            )
            outputs.append(
                OutputEntry(
                    key=key, content_type=out.content_type, role=out.role, size=out.path.stat().st_size
                )
            )
        # A cancel or a lost lease after the uploads leaves them uncommitted (no manifest).
        self.check()
        duration_ms = (time.monotonic() - self.started) * 1000
        try:
            manifest = Manifest(
                item_id=self.item_id,
                job_id=self.job_id,
                attempt=self.attempt,
                outputs=outputs,
                meta={
                    **result.meta,
                    **(extra_meta or {}),
                    "model_ms": round(model_ms, 3),
                    "overhead_ms": round(duration_ms - model_ms, 3),
                },
                worker=self.worker,
                duration_ms=round(duration_ms, 3),
                finished_at=time.time(),
            )
        except ValidationError as exc:
            # The provider's result is not what the contract says (a bug, not bad luck): no retry.
            raise FatalError(f"the result does not fit the manifest: {exc}", code="bad_result") from exc
        body = json.dumps(manifest.wire()).encode()
        self._storage(f"write {mkey}", lambda: self.store.put(urls[mkey], body, "application/json"))
        self._report_succeeded(manifest)
        log.info("item %s attempt %d committed %d outputs", self.item_id, self.attempt, len(outputs))
        return {"outcome": "succeeded", "duration_ms": manifest.duration_ms}

    def fail(self, exc: BaseException) -> dict[str, Any]:
        """Record how an attempt ended when it raised; returns the task's result saying so."""
        if isinstance(exc, Cancelled):
            log.info(
                "item %s attempt %d stopped by cancel at %s",
                self.item_id,
                self.attempt,
                self._last_message or "the start",
            )
            return self._cancelled()
        if isinstance(exc, LeaseLost) or (self.heartbeat is not None and self.heartbeat.lost):
            return {"outcome": "skipped", "reason": "lease lost to another delivery"}
        # Reported while the lease is still held: the reconciler then never mistakes this failure for
        # a lost worker (which would retry a failure that is not retryable).
        log.warning("item %s attempt %d failed: %s", self.item_id, self.attempt, exc, exc_info=exc)
        return report_failure(self.message, exc, self.worker)

    def close(self) -> None:
        """Let go of the lease and the work directory, whatever happened."""
        if self.heartbeat is not None:
            self.heartbeat.stop()
            if not self.heartbeat.lost and self.lease is not None:
                try:
                    self.coord.release(self.lease)
                except Exception as exc:  # noqa: BLE001 - it expires by itself
                    log.warning("could not release lease of %s: %s", self.item_id, exc)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def execute(self) -> dict[str, Any]:
        """All phases in order, in this thread (the Runway worker: remote work, nothing to overlap)."""
        from tasks.lanes import process_providers

        try:
            early = self.admit()
            if early is not None:
                return early
            self.fetch_input()
        except HostRefused as exc:
            self.close()
            raise refuse_delivery(exc) from exc
        try:
            stopped = self.start(self.worker, runtime.cpu_description())
            if stopped is not None:
                return stopped
            runtime.item_started(self.item_id, self.job_id)
            try:
                result, model_ms = self.run_model(process_providers().get(self.provider))
                return self.commit(result, model_ms)
            except Exception as exc:
                return self.fail(exc)
        finally:
            runtime.item_ended(self.item_id)
            self.close()

    # --- helpers -------------------------------------------------------------------------------

    def _cancelled(self) -> dict[str, Any]:
        publish_report(CancelledReport(**report_fields(self.message), state="cancelled", worker=self.worker))
        return {"outcome": "cancelled"}

    def _report_succeeded(self, manifest: Manifest, detail: str | None = None) -> None:
        publish_report(
            SucceededReport(
                **report_fields(self.message),
                state="succeeded",
                outputs=manifest.outputs,
                meta=manifest.meta,
                worker=manifest.worker or self.worker,
                duration_ms=manifest.duration_ms,
                detail=detail,
            )
        )

    def _manifest(self) -> Manifest | None:
        """The attempt's committed manifest; None when there is none (or none this version can read:
        the attempt then runs again, and its new manifest replaces it)."""
        body = self._storage("read the manifest", self.store.manifest)
        if body is None:
            return None
        try:
            raw = json.loads(body)
        except ValueError:
            log.error("the manifest of item %s attempt %d is not JSON", self.item_id, self.attempt)
            return None
        return Manifest.parse(raw)

    def _write_grant(self, objects: list[tuple[str, str]]) -> dict[str, str]:
        """PUT URLs for the attempt's objects, asked for under the lease."""
        assert self.lease is not None
        lease = self.lease
        try:
            return self._storage("get a storage grant", lambda: self.store.write_grant(lease.token, objects))
        except GrantDenied as exc:
            if exc.code == "cancelled":
                raise Cancelled() from exc
            raise LeaseLost() from exc
        except HostRefused as exc:
            stop_host(str(exc))
            raise RetryableError(
                f"{exc}; another host runs the item again", code="worker_token_refused"
            ) from exc

    def _storage(self, what: str, call: Callable[[], T]) -> T:
        """Storage trouble is usually brief: retry with backoff (checking cancel) before the attempt fails."""
        deadline = time.monotonic() + settings().storage_retry_s
        delay = 0.5
        while True:
            try:
                return call()
            except (NotFound, InvalidKey, HostRefused, GrantDenied):
                raise
            except Exception as exc:
                if time.monotonic() + delay > deadline:
                    raise RetryableError(
                        f"storage unavailable while trying to {what}: {exc}", code="storage"
                    ) from exc
                log.warning("storage error while trying to %s (retrying in %.1f s): %s", what, delay, exc)
                time.sleep(delay)
                if self.heartbeat is not None:
                    self.check()
                delay = min(delay * 2, 8.0)

    def check(self) -> None:
        """Raise if this run must stop: lease lost, cancelled, past its deadline."""
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
                task_id=self.item_id,
                state="PROGRESS",
                meta={
                    "progress": round(max(0.0, min(1.0, fraction)), 4),
                    "message": message,
                    "attempt": self.attempt,
                },
            )
        except Exception as exc:  # noqa: BLE001 - progress is best effort
            log.debug("progress update failed: %s", exc)
