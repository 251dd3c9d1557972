"""One fault per scenario, each during a job of at least 100 items on a system of its own."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from celery import Celery
from kombu import Connection, Exchange, Queue
from kombu.common import ignore_errors

from app.coordination import lease_key
from bulkgen_stack.processes import Stack, free_port
from providers.runway_sim import RunwaySimServer
from tasks.consumer import close_lost_channels
from tests.conftest import System, SystemFactory
from tests.faults.conftest import FlakyStorageProxy, Outcome, Postgres
from tests.support import distinct_pngs, png_bytes

pytestmark = pytest.mark.faults
N = 120


def counts(system: System, job_id: str) -> dict[str, int]:
    return system.api.get(f"/api/v1/jobs/{job_id}", params={"items_limit": 0}).json()["counts"]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if predicate():
                return time.monotonic() - started
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def progress_resumes(system: System, job_id: str, timeout: float = 120) -> float:
    """Seconds until one more item succeeds than had when this was called."""
    before = counts(system, job_id)["succeeded"]
    total = sum(counts(system, job_id).values())
    return wait_until(
        lambda: counts(system, job_id)["succeeded"] > before or before == total, timeout, "progress to resume"
    )


def submit(system: System, n: int = N, seed: int = 0, **fields: object) -> dict:
    keys = system.api.upload(distinct_pngs(n, seed=seed))
    return system.api.submit(keys, **fields)


def finish(system: System, job: dict, timeout: float = 300) -> dict:
    system.api.wait(job["id"], timeout=timeout)
    return system.api.get(f"/api/v1/jobs/{job['id']}", params={"items_limit": 10000}).json()


def item_mid_run(system: System, job_id: str, timeout: float = 60) -> dict:
    """A running item whose lease its worker holds right now: killing that worker loses the run.

    The API's `running` can lag a finished item by a report, so the lease in Redis decides."""
    r = system.redis()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for item in system.api.job(job_id)["items"]:
            if item["status"] != "running" or not item["worker"]:
                continue
            held = r.get(lease_key(item["id"]))
            if held is not None and held.decode().split("|")[1] == item["worker"]:
                return item
        time.sleep(0.05)
    raise AssertionError(f"no item of job {job_id} was mid-run within {timeout} s")


def test_kill_9_gpu_workers_repeatedly(systems: SystemFactory) -> None:
    sysm = systems.start("f-kill9", workers=("control", "wan_local"))
    for extra in ("wan_b", "wan_c"):
        sysm.stack.start_worker("wan_local", name=extra)
    sysm.stack.wait_workers(["wan_b", "wan_c"])
    # 1 s per item: long enough that the item chosen is still mid-run when its worker dies.
    job = submit(sysm, seed=1, params={"delay_s": 1.0, "queue": "wan_local"})
    recoveries = []
    victims = []
    for _ in range(3):
        running = item_mid_run(sysm, job["id"])
        victim = running["worker"].split("@")[0]
        sysm.stack.kill(victim)
        killed = time.monotonic()
        sysm.api.wait_item(
            job["id"], lambda i, r=running: i["id"] == r["id"] and i["attempt"] > r["attempt"], 60
        )
        recoveries.append(time.monotonic() - killed)
        victims.append(running["id"])
        sysm.stack.stop(victim)
        sysm.stack.start_worker("wan_local", name=victim)
    out = Outcome("kill -9 of a GPU worker mid-item, 3 times", finish(sysm, job), sysm, max(recoveries))
    out.notes.append(f"lease 4 s; re-run after {', '.join(f'{r:.1f}' for r in recoveries)} s")
    figures = out.check()
    assert figures["retried"] >= 3
    by_id = {i["id"]: i for i in out.items()}
    assert all(by_id[v]["status"] == "succeeded" and by_id[v]["attempt"] >= 2 for v in victims)
    lost = [
        e
        for e in sysm.api.events(job["id"])
        if e["kind"] == "item.retry" and "worker lost" in (e["detail"] or "")
    ]
    assert len(lost) >= 3


def test_sigterm_finishes_the_current_item(systems: SystemFactory) -> None:
    sysm = systems.start("f-sigterm", workers=("control", "wan_local", "sam3"))
    job = submit(sysm, seed=2, params={"delay_s": 0.5, "queue": "wan_local"})
    running = item_mid_run(sysm, job["id"])
    # Like `docker stop` or `kill <pid>`: the main process; it lets the running child finish.
    sysm.stack.procs["wan_local"].signal(signal.SIGTERM, group=False)
    sysm.stack.procs["wan_local"].popen.wait(timeout=60)
    assert sysm.stack.procs["wan_local"].popen.returncode == 0
    stopped = time.monotonic()
    sysm.stack.stop("wan_local")
    sysm.stack.start_worker("wan_local")
    progress_resumes(sysm, job["id"])
    recovery = time.monotonic() - stopped
    done = finish(sysm, job)
    item = next(i for i in done["items"] if i["id"] == running["id"])
    assert item["status"] == "succeeded" and item["attempt"] == 1
    out = Outcome("SIGTERM (warm shutdown) of a worker mid-item", done, sysm, recovery)
    out.notes.append("the running item finished on the stopping worker; the rest waited for a new one")
    assert out.check()["retried"] == 0


def test_redis_restart_without_persistence(systems: SystemFactory) -> None:
    sysm = systems.start("f-redis-restart")
    job = submit(sysm, seed=3, params={"delay_s": 0.1, "queue": "spread"})
    wait_until(lambda: counts(sysm, job["id"])["succeeded"] >= 20, 60, "20 items done")
    sysm.stack.stop("redis")
    sysm.stack.start_redis()
    out = Outcome("Redis restarted without persistence", None, sysm, progress_resumes(sysm, job["id"]))  # type: ignore[arg-type]
    out.job = finish(sysm, job)
    out.notes.append("queued items re-published from Postgres after the epoch marker vanished")
    out.check()
    assert any(e["kind"] == "job.republished" for e in sysm.api.events(job["id"]))


def assert_control_worker_stayed_up(system: System, pid: int) -> None:
    """The control worker's main process lived through the fault: same process, started once, and no
    error ended it (the supervisor restarts a worker that exits, which would hide a crash)."""
    proc = system.stack.procs["control"]
    log = proc.log()
    assert proc.pid == pid and proc.alive(), f"the control worker exited and was restarted:\n{log[-4000:]}"
    assert log.count(" ready.") == 1, "the control worker started more than once"
    assert "Unrecoverable error" not in log, log[-4000:]


def _consumer_connection(url: str, queue_name: str) -> Connection:
    """A worker's consumer connection as Redis goes away: a message delivered and not yet acked on the
    task channel, a BRPOP waiting there, and a fanout channel opened after it (as Celery's
    remote-control channel is, once a reply to a remote-control command has failed)."""
    conn = Connection(url)
    queue = Queue(queue_name, Exchange(queue_name, type="direct"), routing_key=queue_name)
    with Connection(url) as publisher:
        publisher.Producer().publish(
            {"n": 1}, exchange=queue.exchange, routing_key=queue_name, declare=[queue]
        )
    delivered: list[object] = []
    task_channel = conn.default_channel
    consumer = conn.Consumer(queue, channel=task_channel, callbacks=[lambda _body, m: delivered.append(m)])
    consumer.qos(prefetch_count=2)
    consumer.consume()
    conn.drain_events(timeout=10)
    box = Queue(f"{queue_name}.box", Exchange(f"{queue_name}.box", type="fanout"), auto_delete=True)
    conn.Consumer(box, channel=conn.channel(), no_ack=True).consume()
    task_channel._brpop_start()  # noqa: SLF001 - the worker's event loop always keeps one waiting
    assert delivered
    return conn


def test_lost_broker_connection_is_torn_down_without_an_error(tmp_path: Path) -> None:
    """The AttributeError that ended the control worker in a Redis outage, and the consumer's way round it."""
    stack = Stack(var_dir=tmp_path, env={"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    stack.start_redis()
    try:
        plain = _consumer_connection(stack.redis_url, "plain")
        ours = _consumer_connection(stack.redis_url, "ours")
        stack.stop("redis")
        # What Celery's consumer does with a lost connection: collect it, then close it.
        plain.collect(socket_timeout=1)
        try:
            ignore_errors(plain, plain.close)
        except AttributeError as exc:
            assert "hostname" in str(exc)
        else:
            pytest.fail("kombu now closes a lost connection cleanly: tasks/consumer.py's workaround can go")
        assert close_lost_channels(ours, timeout=1) == 0
        ours.collect(socket_timeout=1)
        ignore_errors(ours, ours.close)
    finally:
        stack.stop_all()


def test_redis_down_for_30s(systems: SystemFactory) -> None:
    sysm = systems.start("f-redis-down")
    control = sysm.stack.procs["control"].pid
    job = submit(sysm, seed=14, params={"delay_s": 0.1, "queue": "spread"})
    late_keys = sysm.api.upload(distinct_pngs(N, seed=15))
    wait_until(lambda: counts(sysm, job["id"])["succeeded"] >= 20, 60, "20 items done")
    sysm.stack.stop("redis")  # connections refused: every consumer loses its connection
    down_at = time.monotonic()
    # Submitted while Redis is down: recorded in Postgres, its items wait as pending.
    late = sysm.api.submit(late_keys, params={"delay_s": 0.1, "queue": "spread"})
    time.sleep(max(0.0, 30 - (time.monotonic() - down_at)))
    sysm.stack.start_redis()
    out = Outcome("Redis down for 30 s, back empty", None, sysm, progress_resumes(sysm, job["id"]))  # type: ignore[arg-type]
    out.job = finish(sysm, job)
    out.notes.append("the control worker stayed up; a job submitted during the outage ran afterwards")
    out.check()
    Outcome("job submitted while Redis was down", finish(sysm, late), sysm).check(record=False)
    assert_control_worker_stayed_up(sysm, control)


def test_redis_unreachable_for_30s(systems: SystemFactory) -> None:
    sysm = systems.start("f-redis-pause")
    control = sysm.stack.procs["control"].pid
    job = submit(sysm, seed=4, params={"delay_s": 0.1, "queue": "spread"})
    wait_until(lambda: counts(sysm, job["id"])["succeeded"] >= 20, 60, "20 items done")
    redis_proc = sysm.stack.procs["redis"]
    redis_proc.signal(signal.SIGSTOP)  # connections hang: worse than refused
    time.sleep(30)
    redis_proc.signal(signal.SIGCONT)
    out = Outcome("Redis unreachable (frozen) for 30 s", None, sysm, progress_resumes(sysm, job["id"]))  # type: ignore[arg-type]
    out.job = finish(sysm, job)
    out.check()
    assert_control_worker_stayed_up(sysm, control)


@pytest.fixture
def pg_system(systems: SystemFactory, postgres: Postgres) -> Iterator[System]:
    before = len(systems.started)
    sysm = systems.start(f"f-pg-{postgres.port}", database_url=postgres.url)
    yield sysm
    systems.stop_since(before)  # before its Postgres goes away


def test_postgres_restarted(pg_system: System, postgres: Postgres) -> None:
    job = submit(pg_system, seed=5, params={"delay_s": 0.1, "queue": "spread"})
    wait_until(lambda: counts(pg_system, job["id"])["succeeded"] >= 20, 60, "20 items done")
    postgres.stop()
    postgres.start()
    out = Outcome("Postgres restarted", None, pg_system, progress_resumes(pg_system, job["id"]))  # type: ignore[arg-type]
    out.job = finish(pg_system, job)
    out.check()


def test_postgres_unreachable_for_30s(pg_system: System, postgres: Postgres) -> None:
    control = pg_system.stack.procs["control"].pid
    job = submit(pg_system, seed=6, params={"delay_s": 0.1, "queue": "spread"})
    wait_until(lambda: counts(pg_system, job["id"])["succeeded"] >= 20, 60, "20 items done")
    store = pg_system.store()
    manifests_before = len(store.list(prefix=f"outputs/{job['id']}/", limit=1000)[0])
    postgres.stop()
    down_at = time.monotonic()
    r = pg_system.api.get(f"/api/v1/jobs/{job['id']}")
    assert r.status_code == 503 and r.json()["error"]["code"] == "database_unavailable"
    assert "database" in r.json()["error"]["message"]
    time.sleep(max(0.0, 30 - (time.monotonic() - down_at)))
    # Workers kept running without the database: outputs kept arriving in storage.
    assert len(store.list(prefix=f"outputs/{job['id']}/", limit=1000)[0]) > manifests_before
    postgres.start()
    out = Outcome("Postgres unreachable for 30 s", None, pg_system, progress_resumes(pg_system, job["id"]))  # type: ignore[arg-type]
    out.job = finish(pg_system, job)
    out.notes.append("web answered 503 JSON; workers kept running; reports applied afterwards")
    out.check()
    assert_control_worker_stayed_up(pg_system, control)


def test_control_worker_stopped_for_60s(systems: SystemFactory) -> None:
    sysm = systems.start("f-control")
    job = submit(sysm, seed=7, params={"delay_s": 0.1, "queue": "spread"})
    wait_until(lambda: counts(sysm, job["id"])["succeeded"] >= 10, 60, "10 items done")
    sysm.stack.stop("control")
    time.sleep(60)
    sysm.stack.start_worker("control", beat=True, concurrency=2)
    out = Outcome("control worker stopped for 60 s", None, sysm, progress_resumes(sysm, job["id"]))  # type: ignore[arg-type]
    out.job = finish(sysm, job)
    out.notes.append("reports waited in the report stream and were applied on restart")
    out.check()


def test_object_storage_failing_uploads_for_a_while(systems: SystemFactory) -> None:
    from moto.server import ThreadedMotoServer

    from app.storage import S3Storage

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    proxy = FlakyStorageProxy(server.get_host_and_port()[1])
    endpoint = f"http://127.0.0.1:{proxy.port}"
    env = {
        "STORAGE_BACKEND": "s3",
        "S3_BUCKET": "faults",
        "S3_ENDPOINT_URL": endpoint,
        "S3_REGION": "us-east-1",
        "S3_ACCESS_KEY_ID": "test",
        "S3_SECRET_ACCESS_KEY": "test",
    }
    try:
        sysm = systems.start("f-storage", env=env)
        job = submit(sysm, seed=8, params={"delay_s": 0.1, "queue": "spread"})
        wait_until(lambda: counts(sysm, job["id"])["succeeded"] >= 20, 60, "20 items done")
        proxy.failing.set()  # every upload answers 503; downloads and listings still work
        time.sleep(45)
        proxy.failing.clear()
        out = Outcome(
            "object storage failing uploads for 45 s", None, sysm, progress_resumes(sysm, job["id"])
        )  # type: ignore[arg-type]
        out.job = finish(sysm, job)
        assert proxy.refused > 0
        retries = sum(
            sysm.stack.procs[q].log().count("storage error while trying to upload")
            for q in ("wan_local", "sam3", "runway")
        )
        assert retries > 0
        out.notes.append(
            f"{proxy.refused} uploads refused; workers retried them with backoff ({retries} retries "
            "logged) inside their attempts"
        )
        store = S3Storage("faults", endpoint, "us-east-1", "test", "test")
        sysm.store = lambda: store  # type: ignore[method-assign]
        figures = out.check()
        assert figures["retried"] == 0  # the outage was shorter than STORAGE_RETRY_S: no attempt spent
    finally:
        proxy.close()
        server.stop()


def test_runway_misbehaving(systems: SystemFactory) -> None:
    with RunwaySimServer(duration_s=0.3, pending_s=0.1) as sim:
        env = {
            "RUNWAY_BASE_URL": sim.base_url,
            "RUNWAY_POLL_INTERVAL_S": "1",
            "RUNWAY_REQUEST_TIMEOUT_S": "2",
        }
        sysm = systems.start("f-runway", workers=("control",), env=env)
        # One thread per item, as an account on a high concurrency tier would run them.
        sysm.stack.start_worker("runway", concurrency=100)
        sysm.stack.wait_workers(["runway"])
        # For 45 s every request answers 429, for the next 45 s 500; every task then waits THROTTLED
        # for 2 minutes; 10 creates make their task but their answer comes too late.
        now = time.time()
        sim.configure(
            fail_429_until=now + 45,
            fail_500_until=now + 90,
            throttled_s=120.0,
            answer_delay_s=3.0,
            answer_delay_count=10,
        )
        job = submit(sysm, n=100, seed=9, provider="runway", model="gen4_turbo", prompt="storm")
        done = finish(sysm, job, timeout=900)
        stats = sim.stats()
        sim.configure(throttled_s=0.0, fail_429_until=0.0, fail_500_until=0.0)
        created = stats["tasks"]
        assert stats["faults_served"]["429"] >= 100 and stats["faults_served"]["500"] >= 100, stats
        assert stats["faults_served"]["answer_delayed"] == 10
        attempts = sum(i["attempt"] for i in done["items"])
        out = Outcome("Runway: 429 for 45 s, 500 for 45 s, THROTTLED 2 min, 10 lost answers", done, sysm)
        out.notes.append(
            f"{len(created)} Runway tasks for {attempts} attempts: a create whose answer was lost "
            "is never re-sent in its attempt (its task is an orphan at Runway)"
        )
        figures = out.check()
        waited = [i["meta"].get("wall_s") for i in done["items"]]
        assert all(w is not None and w >= 120 for w in waited), (waited, done["items"][:2])  # at Runway
        # Never two Runway tasks for one attempt; each lost answer cost its item one attempt.
        assert len(created) <= attempts
        retried = [e["detail"] or "" for e in sysm.api.events(job["id"]) if e["kind"] == "item.retry"]
        assert figures["retried"] == len(retried) >= 10
        assert sum("not re-sending" in d for d in retried) == 10, retried
        # Every other retry is Runway's misbehaviour outlasting the backoff, or (on a loaded machine,
        # 100 threads on 2 cores) the infrastructure: never a second create or an unexplained failure.
        other = [d for d in retried if "not re-sending" not in d and "giving up after" not in d]
        assert all("worker lost" in d or "storage unavailable" in d for d in other), other


def test_duplicate_and_stale_messages(systems: SystemFactory) -> None:
    sysm = systems.start("f-dups")
    job = submit(sysm, seed=10, params={"delay_s": 0.2, "queue": "spread"})
    client = Celery("dups", broker=sysm.stack.redis_url)
    items = sysm.api.get(f"/api/v1/jobs/{job['id']}", params={"items_limit": 1000}).json()["items"]

    def payload(item: dict) -> dict:
        return {
            "item_id": item["id"],
            "job_id": job["id"],
            "attempt": 1,
            "provider": "echo",
            "model": "echo",
            "input_key": item["input_key"],
            "prompt": None,
            "prompts": [],
            "params": job["params"],
            "deadline_s": 600,
        }

    for item in items:  # every message a second time, on another queue
        other = {"wan_local": "sam3", "sam3": "runway", "runway": "wan_local"}[item["queue"]]
        client.send_task(
            "items.run", args=[payload(item)], task_id=item["id"], queue=other, routing_key=other
        )
    done = finish(sysm, job)
    for item in items[:30]:  # stale redeliveries after success
        client.send_task(
            "items.run",
            args=[payload(item)],
            task_id=item["id"],
            queue=item["queue"],
            routing_key=item["queue"],
        )
    client.close()
    wait_until(lambda: broker_idle(sysm), 60, "every message consumed")
    after = finish(sysm, job)
    assert [i["attempt"] for i in after["items"]] == [i["attempt"] for i in done["items"]]
    # Each item ran and committed once: every other delivery was dropped (lease held, attempt
    # already finished) or replayed the manifest.
    ran = Counter()
    dropped = 0
    for queue in ITEM_QUEUES:
        for line in sysm.stack.procs[queue].log().splitlines():
            if " committed " in line and "attempt 1 committed" in line:
                ran[line.split("item ", 1)[1].split(" ", 1)[0]] += 1
            elif "Task items.run[" in line and (
                "'replayed': True" in line or "this attempt already finished" in line
            ):
                dropped += 1
    assert set(ran) == {i["id"] for i in items} and set(ran.values()) == {1}, ran.most_common(3)
    assert dropped >= 30
    out = Outcome("every message published twice, 30 stale redeliveries", after, sysm)
    out.notes.append(f"each model ran once per item; {dropped} finished deliveries dropped or replayed")
    out.check()


ITEM_QUEUES = ("wan_local", "sam3", "runway")


def broker_idle(system: System) -> bool:
    """No message waiting in any item queue and none delivered but unacknowledged."""
    waiting = system.api.get("/api/v1/queues").json()["queues"]
    # kombu keeps delivered, unacked messages in the "unacked" hash as [message, exchange, routing key].
    unacked = [json.loads(v)[2] for v in system.redis().hvals("unacked")]
    return all(waiting[q]["waiting"] == 0 for q in ITEM_QUEUES) and not set(unacked) & set(ITEM_QUEUES)


def test_corrupt_images_and_model_exceptions_fail_once(systems: SystemFactory) -> None:
    sysm = systems.start("f-corrupt")
    keys = sysm.api.upload(distinct_pngs(95, seed=11))
    store = sysm.store()
    good = png_bytes(64, 64, (1, 1, 1))
    for n in range(5):  # truncated files placed straight in storage, as a bucket sync might
        store.put_bytes(f"inputs/corrupt/{n}.png", good[: len(good) // 2 + n], "image/png")
    job = sysm.api.submit(keys + [f"inputs/corrupt/{n}.png" for n in range(5)], params={"queue": "spread"})
    crash = sysm.api.submit(keys[:10], params={"fail": "crash"})
    done, crashed = finish(sysm, job), finish(sysm, crash)
    failed = [i for i in done["items"] if i["status"] == "failed"]
    assert len(failed) == 5 and all(i["attempt"] == 1 and "corrupt" in i["error"] for i in failed)
    assert all(i["status"] == "failed" and i["attempt"] == 1 for i in crashed["items"])
    assert all("RuntimeError: injected crash inside the model" in i["error"] for i in crashed["items"])
    out = Outcome("5 corrupt images + 10 model crashes (non-retryable)", done, sysm)
    out.notes.append("each failed once with its error; none looped")
    out.check(expect="mixed", max_attempts=1)
    Outcome("model crashes", crashed, sysm).check(expect="mixed", max_attempts=1, record=False)


def test_cancel_queued_running_and_at_runway(systems: SystemFactory) -> None:
    with RunwaySimServer(duration_s=0.3, throttled_s=120.0) as sim:
        env = {"RUNWAY_BASE_URL": sim.base_url, "RUNWAY_POLL_INTERVAL_S": "0.3"}
        sysm = systems.start("f-cancel", env=env)
        gpu = submit(sysm, n=100, seed=12, params={"delay_s": 2.0, "queue": "wan_local"})
        runway = submit(sysm, n=4, seed=13, provider="runway", model="gen4_turbo", prompt="cancel")
        running = item_mid_run(sysm, gpu["id"])
        wait_until(lambda: len(sim.stats()["tasks"]) == 4, 60, "4 tasks waiting at Runway")
        for job in (gpu, runway):
            sysm.api.post(f"/api/v1/jobs/{job['id']}/cancel")
        started = time.monotonic()
        # The running item stops at its next step (0.1 s): its worker lets go of the lease.
        r = sysm.redis()
        wait_until(lambda: not r.exists(lease_key(running["id"])), 10, "the running item to stop")
        stopped = time.monotonic() - started
        done, remote = finish(sysm, gpu, 30), finish(sysm, runway, 30)
        wait_until(
            lambda: all(t["status"] == "CANCELLED" or t["deleted"] for t in sim.stats()["tasks"].values()),
            30,
            "remote cancels",
        )
        assert done["status"] == "cancelled" and remote["status"] == "cancelled"
        assert done["counts"]["cancelled"] >= 99 and remote["counts"]["cancelled"] == 4
        assert sysm.output_sets(gpu["id"], running["id"]) == []
        worker_log = sysm.stack.procs["wan_local"].log()
        assert f"items.run[{running['id']}] succeeded" in worker_log
        assert (
            "'outcome': 'cancelled'" in worker_log.split(f"items.run[{running['id']}] succeeded", 1)[1][:200]
        )
        out = Outcome("cancel: 100 GPU items (queued + running), 4 waiting at Runway", done, sysm, stopped)
        out.notes.append(
            f"the running item stopped {stopped:.1f} s after the cancel, with no output; "
            "Runway tasks cancelled remotely"
        )
        out.check(expect="mixed")
        Outcome("cancel at Runway", remote, sysm).check(expect="mixed", record=False)
