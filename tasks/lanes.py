"""The GPU worker's pipeline: one lane per device, prefetch ahead of it, commits behind it.

A GPU worker is one process running Celery's threads pool. Each item thread admits its message,
fetches the input (while the device is busy with the item before), then hands the item to a lane:
the lane's own thread owns the device and its loaded models, takes the lease when the item really
starts, and runs one item, or a micro-batch of several waiting ones, at a time. The item thread
then hands the outputs to the committer (uploads, manifest last, report) and returns, so its
message is acked and the next one arrives while the device works.

Models load in the lane threads when the process starts: the worker answers pings meanwhile but
consumes its GPU queues only once a lane is ready (the `ModelGate` consumer step), and a lane whose
model cannot load is `broken` and takes nothing. Items prefetched but not started hold no lease and
spend no attempt: they go back to the queue when the worker drains or breaks, and the reconciler
re-publishes them if the process dies (their hold in Redis stops being renewed).
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import math
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from celery import bootsteps
from celery.exceptions import Reject

from app.config import settings
from app.coordination import DEVICES_KEY, Coordination, redis_client
from providers import BatchEntry, FatalError, Provider, RunResult, build_registry
from tasks import runtime
from tasks.grants import HostRefused
from tasks.items import ItemRun, classify_model_error, is_out_of_memory, refuse_delivery

log = logging.getLogger(__name__)
# Exit status after repeated out-of-memory failures: non-zero, so a supervisor restarts the process.
EXIT_AFTER_OOM = 75
# How long a leaving process waits for its running batches before it exits anyway.
LEAVE_PATIENCE_S = 120.0


class Providers:
    """This lane's (or process's) provider instances, each loaded once on the lane's device."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.registry = build_registry(settings().providers)
        self.loaded: dict[str, Provider] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Provider:
        with self._lock:
            if name not in self.loaded:
                provider = self.registry[name]
                started = time.monotonic()
                provider.load(self.device)
                log.info("loaded provider %s on %s in %.2f s", name, self.device, time.monotonic() - started)
                self.loaded[name] = provider
            return self.loaded[name]


@cache
def process_providers() -> Providers:
    """Providers of a worker without lanes (the Runway worker): remote work, no device to own."""
    return Providers("cpu")


def loaded_models(providers: Providers) -> list[str]:
    """What a lane (or process) has loaded, for the Workers page: "wan: Wan-AI/Wan2.2-TI2V-5B-Diffusers"."""
    out = []
    for name, provider in sorted(providers.loaded.items()):
        ref = getattr(provider, "model_ref", None)
        out.append(f"{name}: {ref}" if ref else name)
    return out


@dataclass
class Waiting:
    """An item handed to a lane; `done` resolves once it ran (or will not run here)."""

    run: ItemRun
    done: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


# What a lane hands back to the item thread.
REQUEUE = "requeue"  # not started: give the message back for another worker
STOPPED = "stopped"  # not started (cancelled, superseded): an outcome dict follows
RAN = "ran"  # the model ran: (result, model_ms, meta) or the exception it raised


class Lane(threading.Thread):
    def __init__(self, pipeline: Pipeline, index: int, device: str, gpu_id: str | None) -> None:
        super().__init__(daemon=True, name=f"lane-{index}")
        self.pipeline = pipeline
        self.index = index
        self.device = device
        self.gpu_id = gpu_id
        self.providers = Providers(device)
        self.inbox: queue.Queue[Waiting | None] = queue.Queue()
        self.state = "loading"
        self.error: str | None = None
        # The item running now (the first of its batch): (item id, since when, job id).
        self.current: tuple[str, float, str] | None = None
        self.consecutive_oom = 0
        # Items handed to this lane and not yet resolved (fetching, waiting or running).
        self.assigned = 0
        # Items per forward pass: the worker's batch size where a provider of its queues can batch.
        batching = [p.max_batch for p in self.providers.registry.values() if p.queue in pipeline.queues]
        self.batch = min(settings().worker_batch_size, max(batching, default=1))
        # Items kept fetched ahead, tuned from how long fetching an input takes against the model.
        self.prefetch_low = max(settings().worker_prefetch, self.batch)
        self.prefetch_high = max(self.prefetch_low, settings().worker_max_prefetch)
        self.prefetch = self.prefetch_low
        self.fetch_ms: float | None = None
        self.batch_ms: float | None = None
        self._description: str | None = None
        # The GPU's name and memory, for the Workers page (None on a CPU lane).
        self.gpu_name: str | None = None
        self.memory_mib: int | None = None

    @property
    def worker(self) -> str:
        base = f"{runtime.node_name}/{os.getpid()}"
        return base if len(self.pipeline.lanes) == 1 else f"{base}#{self.index}"

    def description(self) -> str:
        """E.g. "GPU 3: NVIDIA H200, 143771 MiB" — shown per item and per worker."""
        if self._description is not None:
            return self._description
        if not self.device.startswith("cuda"):
            return runtime.cpu_description()
        try:
            import torch

            props = torch.cuda.get_device_properties(int(self.device.split(":")[1]))
            self.gpu_name, self.memory_mib = str(props.name), int(props.total_memory // 2**20)
            self._description = f"GPU {self.gpu_id}: {self.gpu_name}, {self.memory_mib} MiB"
        except Exception as exc:  # noqa: BLE001 - description only; the provider reports real CUDA errors
            return f"GPU {self.gpu_id}: unavailable ({type(exc).__name__})"
        return self._description

    def assign(self, delta: int) -> None:
        with self.pipeline.lock:
            self.assigned += delta

    # --- the lane's thread ---------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._use_device()
        except Exception as exc:  # noqa: BLE001 - a GPU that cannot be used: the lane takes nothing
            log.exception("lane %d cannot use %s", self.index, self.device)
            self._set_state("broken", f"{type(exc).__name__}: {exc}")
        else:
            if settings().preload_models:
                self._preload()
            else:
                self._set_state("ready")
        while True:
            first = self.inbox.get()
            if first is None:
                return
            batch = [first]
            try:
                batch += self._more_like(first)
                if self.state == "broken" or self.pipeline.draining:
                    for waiting in batch:
                        waiting.done.set_result((REQUEUE, None))
                    continue
                self._run_batch(batch)
            except BaseException as exc:  # noqa: BLE001 - the lane outlives a bug: its items end instead
                log.exception("lane %d failed running a batch", self.index)
                for waiting in batch:
                    if not waiting.done.done():
                        started = waiting.run.lease is not None
                        waiting.done.set_result((RAN, exc) if started else (REQUEUE, None))

    def _use_device(self) -> None:
        # Code that says plain "cuda" lands on this lane's GPU, not GPU 0.
        if not self.device.startswith("cuda"):
            return
        import torch

        if torch.cuda.is_available():
            torch.cuda.set_device(self.device)
        else:
            log.warning("lane %d: %s is not available to torch; models will say so", self.index, self.device)

    def _preload(self) -> None:
        names = [
            name
            for name, provider in self.providers.registry.items()
            if provider.queue in runtime.consumed_queues or name == "echo"
        ]
        try:
            for name in names:
                self.providers.get(name)
        except Exception as exc:  # noqa: BLE001 - the worker stays up, says broken, takes nothing
            log.exception("lane %d could not load its models; it takes no items", self.index)
            self._set_state("broken", f"{type(exc).__name__}: {exc}")
            return
        self._set_state("ready")

    def _set_state(self, state: str, error: str | None = None) -> None:
        self.state, self.error = state, error
        log.info("lane %d on %s is %s%s", self.index, self.device, state, f": {error}" if error else "")
        self.pipeline.lane_changed()

    def _more_like(self, first: Waiting) -> list[Waiting]:
        """Items already waiting that can share `first`'s forward pass (same provider and model)."""
        provider = self.providers.registry.get(first.run.provider)
        limit = min(self.batch, provider.max_batch if provider is not None else 1)
        more: list[Waiting] = []
        put_back: list[Waiting] = []
        while len(more) + 1 < limit:
            try:
                waiting = self.inbox.get_nowait()
            except queue.Empty:
                break
            if waiting is None:
                self.inbox.put(None)
                break
            if (waiting.run.provider, waiting.run.model) == (first.run.provider, first.run.model):
                more.append(waiting)
            else:
                put_back.append(waiting)
        for waiting in put_back:
            self.inbox.put(waiting)
        return more

    def _run_batch(self, batch: list[Waiting]) -> None:
        name = batch[0].run.provider
        if name not in self.providers.registry:
            # A message for a provider this deployment's workers do not offer: it fails, the lane stays.
            for waiting in batch:
                waiting.run.fetch_error = FatalError(
                    f"provider {name!r} is not enabled on this worker", code="unknown_provider"
                )
        else:
            try:
                self.providers.get(name)
            except Exception as exc:  # noqa: BLE001 - a model that cannot load breaks the lane, not the items
                log.exception("lane %d could not load provider %s", self.index, name)
                self._set_state("broken", f"{type(exc).__name__}: {exc}")
                for waiting in batch:
                    waiting.done.set_result((REQUEUE, None))
                return
        started: list[Waiting] = []
        for waiting in batch:
            try:
                stopped = waiting.run.start(self.worker, self.description())
            except Exception as exc:  # noqa: BLE001 - Redis away
                # Not started (no lease): it goes back untouched; a started one fails with the error.
                log.warning("could not start item %s: %s", waiting.run.item_id, exc)
                waiting.done.set_result((RAN, exc) if waiting.run.lease is not None else (REQUEUE, None))
                continue
            # Started: the start call dropped the Redis hold along with taking the lease.
            self.pipeline.unhold(waiting.run, keep_in_redis=stopped is None)
            if stopped is not None:
                waiting.done.set_result((STOPPED, stopped))
            elif waiting.run.fetch_error is not None:
                waiting.done.set_result((RAN, waiting.run.fetch_error))
            else:
                started.append(waiting)
        if not started:
            return
        provider = self.providers.loaded[name]
        self.current = (started[0].run.item_id, time.time(), started[0].run.job_id)
        began = time.monotonic()
        if len(started) == 1:
            run = started[0].run
            try:
                results: list[Any] = [provider.run(run.input_path, run.spec, run.ctx)]  # type: ignore[arg-type]
            except Exception as exc:  # noqa: BLE001 - typed below, reported by the item thread
                results = [exc]
        else:
            entries = [BatchEntry(w.run.input_path, w.run.spec, w.run.ctx) for w in started]  # type: ignore[arg-type]
            try:
                results = provider.run_batch(entries)
            except Exception as exc:  # noqa: BLE001 - the whole batch failed alike
                results = [exc] * len(started)
        # The device was busy for the batch; each item is charged its share.
        batch_ms = (time.monotonic() - began) * 1000
        model_ms = batch_ms / len(started)
        self._tune_prefetch(batch_ms)
        self.current = None
        out_of_memory = device_fault = False
        if len(results) != len(started):
            results = [FatalError(f"{name} returned {len(results)} results for {len(started)} items")] * len(
                started
            )
        for waiting, result in zip(started, results, strict=True):
            if isinstance(result, RunResult):
                meta = {"batch_size": len(started)} if len(started) > 1 else {}
                waiting.done.set_result((RAN, (result, model_ms, meta)))
            else:
                error = classify_model_error(result)
                out_of_memory = out_of_memory or is_out_of_memory(error)
                device_fault = device_fault or getattr(error, "code", None) == "cuda_error"
                waiting.done.set_result((RAN, error))
        self._after_memory_trouble(out_of_memory, device_fault)

    def fetched(self, ms: float) -> None:
        """An item thread's time from receiving its message to holding the input."""
        self.fetch_ms = ms if self.fetch_ms is None else 0.8 * self.fetch_ms + 0.2 * ms

    def _tune_prefetch(self, batch_ms: float) -> None:
        """Fetch far enough ahead that the next inputs are there when the model is free: each
        fetch has (prefetched batches) × (batch time) to finish. Slow models stay at the floor."""
        self.batch_ms = batch_ms if self.batch_ms is None else 0.8 * self.batch_ms + 0.2 * batch_ms
        if self.fetch_ms is None:
            return
        ratio = self.fetch_ms / max(self.batch_ms, 1.0)
        want = min(self.prefetch_high, max(self.prefetch_low, self.batch * math.ceil(ratio)))
        # Grow at once; shrink only with a margin, so a ratio near a boundary does not flap.
        if want < self.prefetch and self.batch * math.ceil(1.5 * ratio) >= self.prefetch:
            return
        if want != self.prefetch:
            log.info(
                "lane %d prefetches %d items (fetch %.0f ms, batch %.0f ms)",
                self.index,
                want,
                self.fetch_ms,
                self.batch_ms,
            )
            self.prefetch = want
            self.pipeline.prefetch_changed()

    def _after_memory_trouble(self, out_of_memory: bool, device_fault: bool = False) -> None:
        """Free cached GPU memory after an OOM; after too many in a row, or after a device fault
        (the CUDA context is unusable after one), start a fresh process."""
        if device_fault:
            self.pipeline.exit_for_fresh_process("a CUDA device fault")
            return
        if not out_of_memory:
            self.consecutive_oom = 0
            return
        self.consecutive_oom += 1
        if "torch" in sys.modules:
            torch = sys.modules["torch"]
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        limit = settings().worker_max_consecutive_oom
        log.warning("lane %d: out of memory (%d in a row, limit %d)", self.index, self.consecutive_oom, limit)
        if self.consecutive_oom >= limit:
            self.pipeline.exit_for_fresh_process(f"{self.consecutive_oom} out-of-memory failures in a row")


class Pipeline:
    """The lanes of this process, the items it holds, and the committer behind them."""

    def __init__(self, devices: list[tuple[str, str | None]], queues: set[str]) -> None:
        self.queues = queues
        self.lock = threading.Lock()
        self.lanes = [Lane(self, i, device, gpu) for i, (device, gpu) in enumerate(devices)]
        threads = self.threads()
        self.committer = concurrent.futures.ThreadPoolExecutor(
            max_workers=threads * 2, thread_name_prefix="commit"
        )
        # Backpressure: an item thread waits (holding its message) while this many commits are running.
        self.commit_slots = threading.BoundedSemaphore(threads * 2)
        self.coord = Coordination(redis_client(settings().broker_url))
        # Keyed by the run itself: two deliveries of one item are two holds.
        self.held: dict[int, ItemRun] = {}
        self.draining = False
        self.consumer: Any = None
        self._beat = threading.Thread(target=self._heartbeat, daemon=True, name="pipeline-heartbeat")

    def start(self) -> None:
        self._forget_earlier_processes()
        for lane in self.lanes:
            lane.start()
        self._beat.start()

    def _forget_earlier_processes(self) -> None:
        # A restarted worker keeps its name: what its dead process announced must not linger.
        try:
            r = redis_client(settings().broker_url)
            mine = f"{runtime.node_name}/{os.getpid()}#"
            stale = [
                f
                for f, _ in r.hscan_iter(DEVICES_KEY, match=f"{runtime.node_name}/*")
                if not f.decode().startswith(mine)
            ]
            if stale:
                r.hdel(DEVICES_KEY, *stale)
        except Exception as exc:  # noqa: BLE001 - informational
            log.warning("could not clear earlier announcements: %s", exc)

    # --- item threads --------------------------------------------------------------------------

    def threads(self) -> int:
        """Item threads the pool needs: per lane, its running batch and the most it prefetches."""
        return sum(lane.batch + lane.prefetch_high for lane in self.lanes)

    def run(self, run: ItemRun) -> dict[str, Any]:
        arrived = time.monotonic()
        # Held from the first moment: if this process dies, the reconciler gives the item back.
        self.hold(run)
        lane = self._pick()
        if lane is None:
            # The Redis hold stays until it expires: should this process die before the message is
            # back in the queue, the reconciler still publishes the item (a duplicate is harmless).
            self.unhold(run, keep_in_redis=True)
            self._sync_consuming()
            raise Reject("no lane of this worker can take items", requeue=True)
        try:
            early = run.admit()
            if early is not None:
                # Nothing to give back (cancelled, stale or finished): the hold goes at once.
                self.unhold(run)
                return early
            run.fetch_input()
            lane.fetched((time.monotonic() - arrived) * 1000)
            waiting = Waiting(run)
            lane.inbox.put(waiting)
            kind, value = waiting.done.result()
        except HostRefused as exc:
            run.close()
            self.drain()
            self._sync_consuming()
            raise refuse_delivery(exc) from exc
        except BaseException:
            run.close()
            raise
        finally:
            lane.assign(-1)
            self.unhold(run, keep_in_redis=True)
        if kind == REQUEUE:
            run.close()
            raise Reject("this worker cannot run the item now", requeue=True)
        if kind == STOPPED:
            run.close()
            return value
        if isinstance(value, BaseException):
            try:
                return run.fail(value)
            finally:
                run.close()
        self.commit_slots.acquire()
        try:
            self.committer.submit(self._commit, run, *value)
        except RuntimeError:
            # The process is leaving (committer shut down): commit here rather than drop the result.
            self._commit(run, *value)
        return {"outcome": "ran", "committing": True}

    def _commit(self, run: ItemRun, result: RunResult, model_ms: float, meta: dict[str, Any]) -> None:
        try:
            run.commit(result, model_ms, meta)
        except Exception as exc:  # noqa: BLE001 - reported as the attempt's outcome
            run.fail(exc)
        finally:
            run.close()
            self.commit_slots.release()

    def _pick(self) -> Lane | None:
        """The ready lane with the fewest items handed to it; counted against it at once."""
        with self.lock:
            ready = [lane for lane in self.lanes if lane.state == "ready"]
            if self.draining or not ready:
                return None
            lane = min(ready, key=lambda x: x.assigned)
            lane.assigned += 1
            return lane

    # --- holds: prefetched items whose worker might vanish -------------------------------------

    def hold(self, run: ItemRun) -> None:
        with self.lock:
            self.held[id(run)] = run
        try:
            self.coord.hold([(run.item_id, run.attempt)], self._hold_ttl())
        except Exception as exc:  # noqa: BLE001 - Redis away: its message is then lost with it anyway
            log.warning("could not record the hold of %s: %s", run.item_id, exc)

    def unhold(self, run: ItemRun, keep_in_redis: bool = False) -> None:
        """Stop holding `run`: once it started (its lease takes over), or when it leaves this
        process (`keep_in_redis`: then the Redis hold simply expires)."""
        with self.lock:
            if self.held.pop(id(run), None) is None or keep_in_redis:
                return
            if any((r.item_id, r.attempt) == (run.item_id, run.attempt) for r in self.held.values()):
                return
        try:
            self.coord.unhold(run.item_id, run.attempt)
        except Exception as exc:  # noqa: BLE001 - an expired hold of a started item is ignored
            log.warning("could not drop the hold of %s: %s", run.item_id, exc)

    @staticmethod
    def _hold_ttl() -> float:
        return float(settings().lease_ttl_s)

    # --- state, heartbeat, queues gate ---------------------------------------------------------

    def state(self) -> str:
        states = {lane.state for lane in self.lanes}
        if self.draining:
            return "draining"
        if "ready" in states:
            return "ready"
        return "loading" if "loading" in states else "broken"

    def lane_changed(self) -> None:
        self.announce()
        self._sync_consuming()

    def lane_fields(self) -> list[str]:
        return [f"{runtime.node_name}/{os.getpid()}#{lane.index}" for lane in self.lanes]

    def announce(self) -> None:
        """Each lane's device and state under the worker's name, for the queues view and the Workers
        page; nothing more once the process has said goodbye (runtime.stop_announcing)."""
        with runtime._announcing:
            if not runtime._stopped.is_set():
                self._announce()

    def _announce(self) -> None:
        try:
            pipe = redis_client(settings().broker_url).pipeline(transaction=False)
            for lane, field_name in zip(self.lanes, self.lane_fields(), strict=True):
                current = lane.current
                entry = {
                    "device": lane.description(),
                    "gpu": lane.gpu_name,
                    "memory_mib": lane.memory_mib,
                    "queues": sorted(self.queues),
                    "node": runtime.node_name,
                    "pid": os.getpid(),
                    "lane": lane.index,
                    # The name its items record as their worker.
                    "worker": lane.worker,
                    "state": "draining" if self.draining and lane.state == "ready" else lane.state,
                    "busy": current is not None,
                    "error": lane.error,
                    "models": loaded_models(lane.providers),
                    "current_item": current[0] if current else None,
                    "current_since": current[1] if current else None,
                    "current_job": current[2] if current else None,
                    "at": time.time(),
                }
                pipe.hset(DEVICES_KEY, field_name, json.dumps(entry))
            pipe.execute()
            # The scheduler keeps about this many of the queues' items in the broker for us.
            slots = self.prefetch_count() if self.state() == "ready" else 0
            about = {
                "kind": "gpu",
                "node": runtime.node_name,
                "pid": os.getpid(),
                "state": self.state(),
                "lanes": len(self.lanes),
            }
            self.coord.announce_consumer(
                f"{runtime.node_name}/{os.getpid()}", sorted(self.queues), slots, **about
            )
        except Exception as exc:  # noqa: BLE001 - informational
            log.warning("could not announce lane states: %s", exc)

    def _heartbeat(self) -> None:
        every = max(0.5, settings().heartbeat_s)
        while True:
            time.sleep(every)
            with self.lock:
                held = [(run.item_id, run.attempt) for run in self.held.values()]
            try:
                self.coord.hold(held, self._hold_ttl())
            except Exception as exc:  # noqa: BLE001 - Redis away: try again next beat
                log.warning("could not renew holds: %s", exc)
            self.announce()
            self._sync_consuming()

    def prefetch_count(self) -> int:
        """Messages this worker may hold: per lane, its running batch and what it prefetches."""
        return sum(lane.batch + lane.prefetch for lane in self.lanes)

    def prefetch_changed(self) -> None:
        # Celery's QoS is made for this: the consumer's event loop applies the new count.
        consumer = self.consumer
        if consumer is None or consumer.qos is None:
            return
        with self.lock:
            target = self.prefetch_count()
            delta = target - consumer.qos.value
            if delta > 0:
                consumer.qos.increment_eventually(delta)
            elif delta < 0:
                consumer.qos.decrement_eventually(-delta)
            consumer.initial_prefetch_count = target

    def gate(self, consumer: Any) -> None:
        """As the consumer starts (and restarts), in its own thread: consume the GPU queues only
        while a lane is ready."""
        self.consumer = consumer
        for name in sorted(self.queues):
            consuming = consumer.task_consumer.consuming_from(name)
            if self.state() != "ready" and consuming:
                consumer.cancel_task_queue(name)
            elif self.state() == "ready" and not consuming:
                consumer.add_task_queue(name)
        if self.state() != "ready":
            log.info("not consuming %s until a model is loaded (%s)", sorted(self.queues), self.state())

    def _sync_consuming(self) -> None:
        """From any thread: bring what the consumer consumes in line with this worker's state;
        the consumer's event loop makes the change (kombu's hub takes callbacks from threads)."""
        consumer = self.consumer
        if consumer is None or consumer.task_consumer is None:
            return
        want = self.state() == "ready"
        for name in sorted(self.queues):
            if consumer.task_consumer.consuming_from(name) != want:
                change = consumer.add_task_queue if want else consumer.cancel_task_queue
                consumer.call_soon(change, name)
                log.info("%s consuming %s (%s)", "starting" if want else "stopping", name, self.state())

    # --- shutdown ------------------------------------------------------------------------------

    def drain(self) -> None:
        """Warm shutdown: running items finish, prefetched ones go back to the queue."""
        self.draining = True

    def finish_commits(self) -> None:
        self.committer.shutdown(wait=True)

    def exit_for_fresh_process(self, reason: str) -> None:
        """Give the prefetched items back, let running batches and commits finish, and exit
        non-zero: the supervisor starts a process with a fresh CUDA context."""
        log.error("exiting for a fresh process: %s", reason)
        self.draining = True
        self._sync_consuming()

        def leave() -> None:
            deadline = time.monotonic() + LEAVE_PATIENCE_S
            # Item threads hand prefetched messages back and running batches end meanwhile.
            while time.monotonic() < deadline and any(lane.assigned or lane.current for lane in self.lanes):
                time.sleep(0.1)
            time.sleep(0.5)  # the consumer's loop sends the rejects
            self.committer.shutdown(wait=True)
            logging.shutdown()
            os._exit(EXIT_AFTER_OOM)

        threading.Thread(target=leave, name="exit", daemon=True).start()


_pipeline: Pipeline | None = None


def current() -> Pipeline | None:
    return _pipeline


def start(queues: set[str], lanes: int | None) -> Pipeline:
    global _pipeline
    _pipeline = Pipeline(runtime.lane_devices(lanes), queues)
    _pipeline.start()
    return _pipeline


class ModelGate(bootsteps.StartStopStep):
    """Consumer step: a GPU worker consumes its queues only once a lane has its model loaded, and
    holds only as many messages as its lanes run and prefetch (fewer than its item threads)."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        if _pipeline is not None:
            c.initial_prefetch_count = _pipeline.prefetch_count()

    def start(self, c: Any) -> None:
        if _pipeline is not None:
            _pipeline.gate(c)
