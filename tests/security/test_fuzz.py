"""Property-based run over the generated OpenAPI document, with every schemathesis check on.

The document is generated from the models the API parses and answers with (app/contract/api.py), so
this shows both that the server survives hostile input and that the document tells the truth: every
answer's status, content type, headers and body are the ones the document names, invalid input is
refused, valid input accepted, and authentication is never ignored.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SystemFactory
from tests.support import png_bytes

# Per-operation expectations the document cannot state (kept beside this test, with the reason for each).
CONFIG = Path(__file__).with_name("schemathesis.toml")


# Over the suite's 600 s default: the run itself is bounded by the subprocess timeout below.
@pytest.mark.timeout(960)
def test_api_answers_as_its_generated_document_says(systems: SystemFactory, tmp_path: Path) -> None:
    # Event streams close after STREAM_MAX_S: short here, so each generated stream request ends.
    sysm = systems.start("fuzz", workers=("control",), env={"STREAM_MAX_S": "1"})
    # A real job and item: the operations on them answer real bodies (checked against the document)
    # rather than only 404s for generated ids.
    key = sysm.api.upload([png_bytes()])[0]
    job = sysm.api.submit([key, key], prompt="a cat")
    item_id = sysm.api.job(job["id"])["items"][0]["id"]
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG.read_text() + f'\n[parameters]\njob_id = "{job["id"]}"\nitem_id = "{item_id}"\n')
    cli = shutil.which("st", path=str(Path(sys.executable).parent)) or "st"
    result = subprocess.run(
        [
            cli,
            "--config-file",
            str(config),
            "run",
            f"{sysm.base_url}/api/v1/openapi.json",
            "--url",
            f"{sysm.base_url}/api/v1",
            "-H",
            f"Authorization: Bearer {sysm.token}",
            "--checks",
            "all",
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
    # The server's traceback says what went wrong; schemathesis only saw the answer.
    tracebacks = [chunk[:3000] for chunk in logs.split("Traceback (most recent call last)")[1:]]
    assert result.returncode == 0, out[-12000:] + "\n\nserver tracebacks:\n" + "\n".join(tracebacks[-3:])
    print(out[out.find("SUMMARY") :])  # shown with -rP: operations, phases, cases generated
    sent = int(re.search(r"(\d+) generated", out).group(1))  # type: ignore[union-attr]
    assert sent >= 1000, out[-3000:]
    assert '" 500 ' not in logs and '" 503 ' not in logs
