"""Layering rules that keep hosts small and Celery's app discovery working."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

HEAVY = ("torch", "diffusers", "transformers")


def run_python(code: str, tmp_path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["VAR_DIR"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return out.stdout.strip()


def test_web_app_builds_without_importing_model_libraries(tmp_path) -> None:
    code = (
        "import sys, web; app = web.create_app(); "
        "c = app.test_client(); assert c.get('/healthz').status_code == 200; "
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    assert run_python(code, tmp_path) == "[]"


def test_celery_finds_the_app_as_tasks_app_and_tasks_celery(tmp_path) -> None:
    code = (
        "import sys, tasks; from celery import Celery; "
        "assert isinstance(tasks.app, Celery) and tasks.app is tasks.celery; "
        "print(sorted(t for t in tasks.app.tasks if not t.startswith('celery.')), "
        f"[m for m in {HEAVY!r} if m in sys.modules])"
    )
    # Only periodic control work is a task; the standing loops are threads (tasks/control_loops.py).
    assert run_python(code, tmp_path) == "['control.reconcile', 'control.retention', 'items.run'] []"


def test_gpu_worker_settings_have_no_database(tmp_path) -> None:
    code = (
        "import os; os.environ['NO_DATABASE'] = '1'; os.environ['DATABASE_URL'] = 'postgresql://x@db/y'; "
        "from app.config import settings; print(settings().database_url); "
        "from tasks.control import flask_app\n"
        "try:\n    flask_app()\nexcept RuntimeError as e:\n    print('refused:', 'no database settings' in str(e))"
    )
    assert run_python(code, tmp_path).splitlines() == ["None", "refused: True"]


ROOT = Path(__file__).resolve().parents[2]
# Process supervision (children, signals, restarts) lives in bulkgen_stack/, the `bulkgen` command.
PROCESS_MODULES = {"subprocess", "signal", "multiprocessing"}


def imported_modules(package: str) -> dict[str, set[str]]:
    """Top-level module names each file of `package` imports (absolute imports only)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


def test_no_server_package_imports_the_process_manager() -> None:
    for package in ("app", "tasks", "web", "providers"):
        importers = [path for path, names in imported_modules(package).items() if "bulkgen_stack" in names]
        assert importers == [], f"{package} imports bulkgen_stack: {importers}"


def test_app_holds_no_process_management() -> None:
    offenders = {
        path: sorted(names & PROCESS_MODULES)
        for path, names in imported_modules("app").items()
        if names & PROCESS_MODULES
    }
    assert offenders == {}
    calls = [
        path
        for path in (ROOT / "app").rglob("*.py")
        if re.search(r"\bos\.(kill|killpg|fork|exec\w*|spawn\w*)\(", path.read_text())
    ]
    assert calls == []


def test_the_bulkgen_command_is_the_process_manager() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["bulkgen"] == "bulkgen_stack.cli:main"
    assert "subprocess" in imported_modules("bulkgen_stack")["bulkgen_stack/processes.py"]


# The arrows of docs/architecture.md's map: package -> packages of the project it must not import.
FORBIDDEN_IMPORTS = {
    "web": {"providers", "tasks", "bulkgen_stack"},
    "app": {"tasks", "web", "bulkgen_stack", "bulkgen_client"},
    "tasks": {"web", "bulkgen_stack"},
    "providers": {"app", "tasks", "web", "bulkgen_stack", "bulkgen_client"},
    "bulkgen_client": {"app", "tasks", "web", "providers", "bulkgen_stack"},
}


def test_packages_import_only_along_the_maps_arrows() -> None:
    offenders = {
        path: sorted(names & forbidden)
        for package, forbidden in FORBIDDEN_IMPORTS.items()
        for path, names in imported_modules(package).items()
        if names & forbidden
    }
    assert offenders == {}


PROVIDER_NAMES = re.compile(r"\b(wan_local|runway|sam3|echo)\b", re.IGNORECASE)


def test_the_core_services_name_no_provider() -> None:
    # Provider knowledge lives in providers/ (what a provider is) and settings (routing rules).
    named = {
        str(path.relative_to(ROOT)): sorted({m.group(0) for m in PROVIDER_NAMES.finditer(path.read_text())})
        for path in sorted((ROOT / "app" / "services").rglob("*.py"))
        if PROVIDER_NAMES.search(path.read_text())
    }
    assert named == {}
