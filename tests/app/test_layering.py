"""Layering rules that keep hosts small and Celery's app discovery working."""

from __future__ import annotations

import os
import subprocess
import sys

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
    out = run_python(code, tmp_path)
    assert (
        out
        == "['control.apply_reports', 'control.fill_windows', 'control.reconcile', 'control.retention', 'control.send_webhooks', 'items.run'] []"
    )


def test_gpu_worker_settings_have_no_database(tmp_path) -> None:
    code = (
        "import os; os.environ['NO_DATABASE'] = '1'; os.environ['DATABASE_URL'] = 'postgresql://x@db/y'; "
        "from app.config import settings; print(settings().database_url); "
        "from tasks.control import flask_app\n"
        "try:\n    flask_app()\nexcept RuntimeError as e:\n    print('refused:', 'no database settings' in str(e))"
    )
    assert run_python(code, tmp_path).splitlines() == ["None", "refused: True"]
