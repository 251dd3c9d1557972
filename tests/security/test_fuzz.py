"""Property-based run over the OpenAPI document: no generated request may cause a 5xx."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SystemFactory


# Over the suite's 600 s default: the run itself is bounded by the subprocess timeout below.
@pytest.mark.timeout(960)
def test_schemathesis_finds_no_server_errors(systems: SystemFactory, tmp_path: Path) -> None:
    # Event streams close after STREAM_MAX_S: short here, so each generated stream request ends.
    sysm = systems.start("fuzz", workers=("control",), env={"STREAM_MAX_S": "2"})
    cli = shutil.which("st", path=str(Path(sys.executable).parent)) or "st"
    result = subprocess.run(
        [
            cli,
            "run",
            f"{sysm.base_url}/api/v1/openapi.json",
            "--url",
            f"{sysm.base_url}/api/v1",
            "-H",
            f"Authorization: Bearer {sysm.token}",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "120",
            "--workers",
            "2",
            "--seed",
            "1",
            "--report",
            "junit",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "NO_COLOR": "1"},
    )
    out = result.stdout + result.stderr
    logs = sysm.stack.procs["web"].log()
    # The server's traceback says what went wrong; schemathesis only saw the 500.
    tracebacks = [chunk[:3000] for chunk in logs.split("Traceback (most recent call last)")[1:]]
    assert result.returncode == 0, out[-6000:] + "\n\nserver tracebacks:\n" + "\n".join(tracebacks[-3:])
    sent = int(re.search(r"(\d+) generated", out).group(1))  # type: ignore[union-attr]
    assert sent >= 1000, out[-3000:]
    assert '" 500 ' not in logs and '" 503 ' not in logs
