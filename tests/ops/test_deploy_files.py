"""The Dockerfiles and docker-compose.yml only run what the project has.

No Docker engine runs here, so the images are never built in tests; instead every command, module,
console script, extra, copied path, queue and environment variable they name is checked against the
repository, and the compose file against the deployment rules (no database on GPU/API workers,
persistent Redis that never evicts, GPUs reserved behind the `gpu` profile).
"""

from __future__ import annotations

import ast
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = ("Dockerfile.web", "Dockerfile.worker")
COMPOSE = ROOT / "docker-compose.yml"
POOLS = {"prefork", "threads", "solo", "eventlet", "gevent"}
# Read by libraries rather than by our code.
THIRD_PARTY_ENV = {"FLOWER_BASIC_AUTH", "HF_TOKEN", "HF_HOME"}
# Queues that must never see database credentials (plus Flower, which needs none).
NO_DB_QUEUES = {"wan_local", "sam3", "runway"}


@cache
def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@cache
def celery_queues() -> frozenset[str]:
    """The queues celeryconfig declares, read in a fresh interpreter with a GPU host's settings."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(NO_DATABASE="1", VAR_DIR=tempfile.mkdtemp(prefix="deploy-files-"))
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import celeryconfig; print(','.join(q.name for q in celeryconfig.task_queues))",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return frozenset(out.stdout.strip().split(","))


@cache
def web_routes() -> frozenset[str]:
    found = set()
    for path in (ROOT / "web").rglob("*.py"):
        found.update(re.findall(r"@bp\.(?:get|post|route)\(\s*\"([^\"]+)\"", path.read_text()))
    return frozenset(found)


@cache
def flask_commands() -> frozenset[str]:
    text = (ROOT / "web" / "cli.py").read_text()
    # Flask's own and Flask-Migrate's groups, plus the ones web/cli.py registers.
    return frozenset({"run", "shell", "routes", "db", *re.findall(r"cli\.command\(\"([^\"]+)\"", text)})


@cache
def project_source() -> str:
    files = [ROOT / "celeryconfig.py"]
    for package in ("app", "tasks", "providers", "web"):
        files += sorted((ROOT / package).rglob("*.py"))
    return "\n".join(f.read_text() for f in files)


def module_file(dotted: str) -> Path | None:
    base = ROOT.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def defines(path: Path, name: str) -> bool:
    """Whether a module binds `name` at top level (def, class, assignment or import)."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name == name:
            return True
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return True
        if isinstance(node, ast.ImportFrom | ast.Import) and any(
            (a.asname or a.name) == name for a in node.names
        ):
            return True
    return False


def option(argv: list[str], *names: str) -> str | None:
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if name.startswith("--") and arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def check_command(argv: list[str], where: str) -> None:
    """Fail unless `argv` runs something this project provides."""
    assert argv, f"{where}: empty command"
    exe = Path(argv[0]).name
    if re.fullmatch(r"python3?(\.\d+)?", exe):
        if argv[1] == "-m":
            module = argv[2]
            if module in ("celery", "flask", "gunicorn"):
                return check_command([module, *argv[3:]], where)
            path = module_file(module)
            assert path is not None, f"{where}: no module {module}"
            main = path.parent / "__main__.py" if path.name == "__init__.py" else path
            assert main.is_file() and "__main__" in main.read_text(), f"{where}: {module} cannot run with -m"
            return None
        if argv[1] == "-c":
            code = argv[2]
            compile(code, where, "exec")
            for port, route in re.findall(r"https?://127\.0\.0\.1:(\d+)(/[\w/.-]*)", code):
                if port == "5555":
                    assert route == "/healthcheck", f"{where}: Flower has no {route}"
                else:
                    assert route in web_routes(), f"{where}: the web app has no route {route}"
            return None
        raise AssertionError(f"{where}: unexpected python invocation {argv}")
    if exe == "celery":
        app = option(argv, "-A", "--app")
        assert app is not None, f"{where}: celery without -A"
        path = module_file(app)
        assert path is not None, f"{where}: celery -A {app}: no such module"
        assert defines(path, "app") or defines(path, "celery"), f"{where}: {app} has no Celery app"
        sub = next(a for a in argv[argv.index(app) + 1 :] if not a.startswith("-"))
        assert sub in ("worker", "flower", "beat", "inspect", "control", "status"), f"{where}: celery {sub}"
        queues = option(argv, "-Q", "--queues")
        if sub == "worker":
            assert queues, f"{where}: a worker must name its queue"
        if queues:
            unknown = set(queues.split(",")) - celery_queues()
            assert not unknown, (
                f"{where}: queues {unknown} are not in celeryconfig ({sorted(celery_queues())})"
            )
        pool = option(argv, "-P", "--pool")
        assert pool is None or pool in POOLS, f"{where}: pool {pool}"
        return None
    if exe == "gunicorn":
        target = argv[-1]
        module, _, factory = target.partition(":")
        path = module_file(module)
        assert path is not None, f"{where}: gunicorn {target}: no module {module}"
        assert defines(path, factory.removesuffix("()")), f"{where}: {module} has no {factory}"
        return None
    if exe == "flask":
        app = option(argv, "--app", "-A")
        assert app and module_file(app.split(":")[0]), f"{where}: flask --app {app}"
        sub = next(a for a in argv[argv.index(app) + 1 :] if not a.startswith("-"))
        assert sub in flask_commands(), f"{where}: flask {sub}"
        return None
    if exe in pyproject()["project"]["scripts"]:
        return None
    raise AssertionError(f"{where}: {argv[0]} is not a command this project installs")


def pip_targets(script: str) -> list[str]:
    """Requirement arguments of every `pip install` in a RUN line."""
    targets = []
    for part in re.split(r"&&|;", script):
        words = shlex.split(part)
        if words[:2] != ["pip", "install"]:
            continue
        skip = False
        for word in words[2:]:
            if skip:
                skip = False
            elif word in ("--index-url", "-i", "--extra-index-url", "-r", "-c"):
                skip = True
            elif not word.startswith("-"):
                targets.append(word)
    return targets


# --- Dockerfiles -------------------------------------------------------------------------------------


@cache
def dockerfile(name: str) -> DockerfileParser:
    return DockerfileParser(fileobj=io.BytesIO((ROOT / name).read_bytes()))


def instructions(name: str, kind: str) -> list[str]:
    return [i["value"] for i in dockerfile(name).structure if i["instruction"] == kind]


def image_argv(name: str, command: list[str] | None = None) -> list[str]:
    """What a container of this image runs: ENTRYPOINT + (command or CMD)."""
    entry = instructions(name, "ENTRYPOINT")
    cmd = instructions(name, "CMD")
    argv = json.loads(entry[-1]) if entry else []
    return argv + (command if command is not None else (json.loads(cmd[-1]) if cmd else []))


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_copies_and_installs_what_exists(name: str) -> None:
    for value in instructions(name, "COPY"):
        if "--from=" in value:
            continue  # from an earlier build stage (the front-end libraries), not the repository
        words = [w for w in shlex.split(value) if not w.startswith("--")]
        for source in words[:-1]:
            assert (ROOT / source).exists(), f"{name}: COPY {source}: no such file in the repository"
    extras = pyproject()["project"]["optional-dependencies"]
    installed_project = False
    for script in instructions(name, "RUN"):
        for target in pip_targets(script):
            match = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", target)
            if match:
                installed_project = True
                for extra in (match.group(1) or "").split(","):
                    assert not extra or extra in extras, f"{name}: pip install .[{extra}]: no such extra"
    assert installed_project, f"{name}: never installs the project"
    users = instructions(name, "USER")
    assert users and all(
        re.search(rf"useradd .*\b{u}\b", " ".join(instructions(name, "RUN"))) for u in users
    ), f"{name}: USER {users} is never created"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_commands_exist(name: str) -> None:
    check_command(image_argv(name), f"{name} CMD")
    for value in instructions(name, "HEALTHCHECK"):
        _, _, command = value.partition("CMD ")
        check_command(shlex.split(command), f"{name} HEALTHCHECK")


def test_web_image_listens_where_it_says() -> None:
    exposed = instructions("Dockerfile.web", "EXPOSE")
    bind = option(image_argv("Dockerfile.web"), "--bind", "-b")
    assert bind is not None and bind.rsplit(":", 1)[1] in exposed


# --- docker-compose.yml ------------------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def ours(service: dict[str, Any]) -> str | None:
    """The Dockerfile a service runs (ours), or None for a third-party image."""
    build = service.get("build")
    if build is None:
        return None
    build = {"context": build} if isinstance(build, str) else build
    return build.get("dockerfile", "Dockerfile")


def as_argv(command: Any) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
    return {str(k): str(v) for k, v in env.items()}


def project_services() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose()["services"].items() if ours(s)}


def test_compose_builds_only_our_dockerfiles_and_runs_our_commands() -> None:
    services = project_services()
    assert {"migrate", "web", "control", "runway", "flower", "gpu-worker"} <= set(services)
    for name, service in services.items():
        build = service["build"]
        assert (ROOT / build.get("context", ".") / ours(service)).is_file(), f"{name}: no {ours(service)}"
        argv = image_argv(ours(service), as_argv(service["command"]) if "command" in service else None)
        check_command(argv, f"compose {name}")
        test = (service.get("healthcheck") or {}).get("test")
        if test:
            assert test[0] == "CMD", f"{name}: healthcheck in exec form, so it is checkable"
            check_command([str(t) for t in test[1:]], f"compose {name} healthcheck")
    assert as_argv(services["migrate"]["command"]) == ["flask", "--app", "web", "db", "upgrade"]
    control = as_argv(services["control"]["command"])
    assert option(control, "-Q") == "control" and "-B" in control
    beats = [n for n, s in services.items() if "-B" in as_argv(s.get("command", []))]
    assert beats == ["control"], "exactly one scheduler"
    runway = as_argv(services["runway"]["command"])
    assert option(runway, "-Q") == "runway" and option(runway, "-P") == "threads"
    flower = as_argv(services["flower"]["command"])
    assert "--persistent=True" in flower and "FLOWER_BASIC_AUTH" in environment(services["flower"])


def test_compose_environment_is_shared_and_gpu_workers_get_no_database() -> None:
    shared = compose()["x-env"]
    for name, service in project_services().items():
        env = environment(service)
        assert set(shared) <= set(env), f"{name}: does not take the shared x-env"
        unread = {k for k in env if k not in THIRD_PARTY_ENV and f'"{k}"' not in project_source()}
        assert not unread, f"{name}: sets {unread}, which nothing in the project reads"
        argv = image_argv(ours(service), as_argv(service["command"]) if "command" in service else None)
        queues = set((option(argv, "-Q", "--queues") or "").split(",")) - {""}
        if queues & NO_DB_QUEUES or "flower" in argv:
            assert "DATABASE_URL" not in env and "SECRET_KEY" not in env, f"{name}: holds database secrets"
            storage = [k for k in env if k.startswith(("S3_", "AWS_")) or k == "STORAGE_DIR"]
            assert not storage, f"{name}: holds storage settings {storage} (workers use grants)"
            if queues:
                assert "BULKGEN_WORKER_TOKEN" in env, f"{name}: item workers need a worker token"
            assert env.get("NO_DATABASE") == "1" or "NO_DATABASE=1" in " ".join(
                instructions(ours(service), "ENV")
            ), f"{name}: must set NO_DATABASE=1"
    for name in ("migrate", "web", "control"):
        assert "DATABASE_URL" in environment(compose()["services"][name]), name


def test_compose_redis_persists_and_never_evicts() -> None:
    redis = as_argv(compose()["services"]["redis"]["command"])
    assert option(redis, "--appendonly") == "yes"
    assert option(redis, "--maxmemory-policy") == "noeviction"
    assert any(v.endswith(":/data") for v in compose()["services"]["redis"]["volumes"])


def test_compose_gpu_worker_reserves_gpus_behind_a_profile_and_caches_models() -> None:
    gpu = compose()["services"]["gpu-worker"]
    assert ours(gpu) == "Dockerfile.worker" and "gpu" in gpu["profiles"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    env_line = " ".join(instructions("Dockerfile.worker", "ENV"))
    hf_home = re.search(r"HF_HOME=(\S+)", env_line).group(1)
    mounts = {v.split(":")[1]: v.split(":")[0] for v in gpu["volumes"]}
    assert hf_home in mounts and mounts[hf_home] in compose()["volumes"], "model cache on a named volume"
    # Warm shutdown must have time to finish an item before Docker escalates to SIGKILL.
    assert gpu["stop_grace_period"] in ("1h", "30m", "60m")


def test_compose_references_resolve() -> None:
    services = compose()["services"]
    volumes = set(compose()["volumes"])
    for name, service in services.items():
        for dep, rule in (service.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if rule.get("condition") == "service_completed_successfully":
                assert services[dep].get("restart") == "no", f"{dep} is a one-shot: restart: 'no'"
        for mount in service.get("volumes") or []:
            source = mount.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in volumes, f"{name}: volume {source} is not declared"
