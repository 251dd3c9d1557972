"""The README's first command: everything starts on embedded defaults and a curl job completes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bulkgen_stack.processes import free_port
from tests.support import png_bytes


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory):
    var = tmp_path_factory.mktemp("embedded-var")
    web_port, flower_port = free_port(), free_port()
    env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "RUNWAYML_API_SECRET")
    }
    env.update(
        EMBEDDED_REDIS_PORT=str(free_port()),
        RUNWAY_SIM_PORT=str(free_port()),
        HF_HUB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    log = open(var / "up.log", "w+")  # noqa: SIM115 - read while the process runs
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bulkgen_stack",
            "up",
            "--var",
            str(var),
            "--port",
            str(web_port),
            "--flower-port",
            str(flower_port),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    text = ""
    while time.monotonic() < deadline:
        text = (var / "up.log").read_text()
        if "Ctrl-C stops everything" in text or proc.poll() is not None:
            break
        time.sleep(0.5)
    try:
        assert "bulkgen is up" in text, text[-5000:]
        token = re.search(r"API token\s+(\S+)", text).group(1)
        yield {
            "url": f"http://127.0.0.1:{web_port}",
            "token": token,
            "text": text,
            "var": var,
            "flower": flower_port,
        }
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def curl(*args: str) -> str:
    return subprocess.run(
        ["curl", "-sS", "--fail-with-body", *args], capture_output=True, text=True, check=True
    ).stdout


def test_up_prints_url_credentials_and_token(embedded: dict) -> None:
    text = embedded["text"]
    assert embedded["url"] in text
    assert re.search(r"login\s+\S+@\S+ / \S+", text)
    assert embedded["token"].startswith("bg_")
    assert f"http://127.0.0.1:{embedded['flower']}/" in text


def test_curl_job_on_the_diagnostic_provider_completes_and_downloads(embedded: dict, tmp_path: Path) -> None:
    url, auth = embedded["url"], f"Authorization: Bearer {embedded['token']}"
    image = tmp_path / "photo.png"
    image.write_bytes(png_bytes(40, 30, (250, 100, 0)))
    uploaded = json.loads(curl("-H", auth, "-F", f"files=@{image}", f"{url}/api/v1/uploads"))
    key = uploaded["assets"][0]["key"]
    body = json.dumps({"provider": "echo", "inputs": [key], "params": {"queue": "spread"}})
    job = json.loads(
        curl("-H", auth, "-H", "Content-Type: application/json", "-d", body, f"{url}/api/v1/jobs")
    )
    for _ in range(300):
        job = json.loads(curl("-H", auth, f"{url}/api/v1/jobs/{job['id']}"))
        if job["status"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.2)
    assert job["status"] == "succeeded", job
    result = tmp_path / "result.png"
    curl("-o", str(result), job["items"][0]["outputs"][0]["url"])
    assert result.read_bytes() == image.read_bytes()
    archive = tmp_path / "all.zip"
    curl("-H", auth, "-o", str(archive), f"{url}/api/v1/jobs/{job['id']}/download")
    import zipfile

    with zipfile.ZipFile(archive) as z:
        assert [z.read(n) for n in z.namelist() if n != "manifest.csv"] == [image.read_bytes()]


def test_every_queue_has_a_worker_and_flower_answers(embedded: dict) -> None:
    auth = f"Authorization: Bearer {embedded['token']}"
    queues = json.loads(curl("-H", auth, f"{embedded['url']}/api/v1/queues"))["queues"]
    assert {q: v["workers_online"] for q, v in queues.items()} == {
        "wan_local": 1,
        "runway": 1,
        "sam3": 1,
        "control": 1,
    }
    password = re.search(r"flower\s+\S+ \(admin / (\S+)\)", embedded["text"]).group(1)
    workers = json.loads(
        curl("-u", f"admin:{password}", f"http://127.0.0.1:{embedded['flower']}/api/workers?refresh=1")
    )
    assert len(workers) == 4
