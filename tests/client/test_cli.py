"""`bulkgen submit` and the Client, end to end: the console script as a real subprocess against a
running system (web app, control worker, item workers), the echo provider doing the work."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from PIL import Image

from bulkgen_client import ApiError, Client, UploadRejected
from tests.conftest import System
from tests.support import distinct_pngs

ROOT = Path(__file__).resolve().parents[2]
BULKGEN = Path(sys.executable).parent / "bulkgen"


def submit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`bulkgen submit ARGS` through the installed console script (bulkgen_stack.cli:main)."""
    full = {k: v for k, v in os.environ.items() if k not in ("BULKGEN_URL", "BULKGEN_TOKEN")}
    # The checkout first: an editable install made before bulkgen_client existed does not map it.
    full["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    full.update(env or {})
    return subprocess.run(
        [str(BULKGEN), "submit", *args], capture_output=True, text=True, env=full, timeout=300, cwd=ROOT
    )


def converted(png: bytes, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(png)).save(buf, format=fmt)
    return buf.getvalue()


def job_id_of(out: str) -> str:
    match = re.search(r"^job (\S+): \d+ items", out, re.M)
    assert match, out
    return match.group(1)


def test_folder_with_prompts_csv_runs_and_downloads_named_results(system: System, tmp_path: Path) -> None:
    images = distinct_pngs(12, seed=401)
    folder = tmp_path / "photos"
    names = [f"img{i:02d}.png" for i in range(10)] + ["a/dup.png", "b/dup.png"]
    for name, data in zip(names, images, strict=True):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    (folder / "notes.txt").write_text("not an image")
    # Every image but img09 has a row; the two dup.png are told apart by their path in the folder.
    rows = [(n, f"prompt for {n}", "0.05" if n == "img03.png" else "") for n in names if n != "img09.png"]
    prompts = tmp_path / "p.csv"
    prompts.write_text("file,prompt,delay_s\n" + "".join(f'{n},"{p}",{d}\n' for n, p, d in rows))
    out_dir = tmp_path / "out"

    r = submit(
        "echo",
        str(folder),
        "--prompts",
        str(prompts),
        "--prompt",
        "the default prompt",
        "--param",
        "delay_s=0.01",
        "--wait",
        "--download",
        str(out_dir),
        "--url",
        system.base_url,
        "--token",
        system.token,
    )

    assert r.returncode == 0, r.stdout + r.stderr
    job_id = job_id_of(r.stdout)
    assert f"job {job_id} succeeded: 12 succeeded, 0 failed" in r.stdout
    # Named after the inputs; the second dup.png does not overwrite the first. Echo copies its input,
    # so each result's bytes show which input it came from.
    expected = {f"img{i:02d}.png": images[i] for i in range(10)} | {
        "dup.png": images[10],
        "dup-2.png": images[11],
    }
    assert {p.name: p.read_bytes() for p in out_dir.iterdir()} == expected

    job = system.api.job(job_id)
    assert job["params"]["delay_s"] == 0.01
    walked = [f"img{i:02d}.png" for i in range(10)] + ["a/dup.png", "b/dup.png"]  # the order sent
    for item in job["items"]:
        name = walked[item["index"]]
        assert item["prompt"] == ("the default prompt" if name == "img09.png" else f"prompt for {name}")
        assert item["params"] == ({"delay_s": 0.05} if name == "img03.png" else {})


def test_a_failed_item_exits_1_and_is_named(system: System, tmp_path: Path) -> None:
    images = [
        converted(d, f)
        for d, f in zip(distinct_pngs(4, seed=402), ("PNG", "PNG", "JPEG", "WEBP"), strict=True)
    ]
    folder = tmp_path / "in"
    folder.mkdir()
    names = ["good1.png", "bad.png", "good2.jpg", "good3.webp"]
    for name, data in zip(names, images, strict=True):
        (folder / name).write_bytes(data)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(
        json.dumps({"file": "bad.png", "prompt": "fails", "params": {"fail": "fatal"}})
        + "\n"
        + json.dumps({"file": "good1", "prompt": "by stem"})
        + "\n"
    )
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "good1.png").write_bytes(b"an earlier result")

    r = submit(
        "echo",
        str(folder),
        "--prompts",
        str(prompts),
        "--download",
        str(out_dir),
        # As on a terminal: the progress bars are drawn (the other tests get a line per change).
        env={"BULKGEN_URL": system.base_url, "BULKGEN_TOKEN": system.token, "FORCE_COLOR": "1"},
    )

    assert r.returncode == 1, r.stdout + r.stderr
    assert "3 succeeded, 1 failed" in r.stdout
    assert "failed: bad.png: injected fatal failure [injected]" in r.stdout
    for name in ("good1.png", "good2.jpg", "good3.webp"):
        assert f": {name}:" not in r.stdout
    # Results of the three that succeeded; the file already there is kept, the new one beside it.
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "good1-2.png",
        "good1.png",
        "good2.jpg",
        "good3.webp",
    ]
    assert (out_dir / "good1.png").read_bytes() == b"an earlier result"
    assert (out_dir / "good1-2.png").read_bytes() == images[0]
    assert (out_dir / "good3.webp").read_bytes() == images[3]
    items = {i["index"]: i for i in system.api.job(job_id_of(r.stdout))["items"]}
    assert items[1]["prompt"] == "by stem" and items[3]["prompt"] is None


def test_api_errors_exit_2_with_the_servers_message(system: System, tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(distinct_pngs(1, seed=403)[0])
    r = submit("echo", str(tmp_path), "--url", system.base_url, "--token", "not-a-token")
    assert r.returncode == 2
    assert "HTTP 401 unauthorized" in r.stderr
    r = submit("no_such_provider", str(tmp_path), "--url", system.base_url, "--token", system.token)
    assert r.returncode == 2
    assert "HTTP 400" in r.stderr and "no_such_provider" in r.stderr
    # Without --wait: the job is accepted, its id printed, and nothing waited for.
    r = submit(
        "echo", str(tmp_path), "--param", "delay_s=30", "--url", system.base_url, "--token", system.token
    )
    assert r.returncode == 0, r.stderr
    job_id = job_id_of(r.stdout)
    client = Client(system.base_url, system.token)
    assert client.get(job_id)["status"] in ("queued", "running")
    client.cancel(job_id)
    assert client.wait(job_id, timeout=60)["status"] == "cancelled"


class _OlderServer(BaseHTTPRequestHandler):
    """The system as a server from before direct uploads: 404 for the presign call, everything else
    passed through to the real web app."""

    target = ""

    def _relay(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.startswith("/api/v1/uploads/presign"):
            status, headers = 404, {"Content-Type": "application/json"}
            content = json.dumps({"error": {"code": "not_found", "message": "no such route"}}).encode()
        else:
            skip = ("host", "content-length", "connection")
            sent = {k: v for k, v in self.headers.items() if k.lower() not in skip}
            r = requests.request(self.command, self.target + self.path, data=body, headers=sent, timeout=60)
            status, content = r.status_code, r.content
            headers = {"Content-Type": r.headers.get("Content-Type", "application/octet-stream")}
        self.send_response(status)
        for k, v in {**headers, "Content-Length": str(len(content))}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(content)

    do_GET = do_POST = do_PUT = _relay

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def older_server(system: System) -> Iterator[str]:
    handler = type("Handler", (_OlderServer,), {"target": system.base_url})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("direct", [True, False], ids=["presigned", "multipart"])
def test_client_uploads_both_ways_with_byte_progress(
    system: System, older_server: str, tmp_path: Path, direct: bool
) -> None:
    client = Client(system.base_url if direct else older_server, system.token)
    images = distinct_pngs(6, seed=404 + direct)
    paths = []
    for i, data in enumerate(images):
        paths.append(tmp_path / f"p{i}.png")
        paths[-1].write_bytes(data)
    seen: list[tuple[int, int]] = []

    assets = client.upload(paths, progress=lambda done, total: seen.append((done, total)))

    assert client._direct_uploads is direct
    assert [a["sha256"] for a in assets] == [hashlib.sha256(d).hexdigest() for d in images]
    assert [a["size"] for a in assets] == [len(d) for d in images]
    assert seen[-1] == (sum(map(len, images)), sum(map(len, images)))

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    if direct:
        # Refused one by one: the others are kept and listed on the exception.
        with pytest.raises(UploadRejected) as exc:
            client.upload([paths[0], broken])
        assert [r["name"] for r in exc.value.rejected] == ["broken.png"]
        assert exc.value.assets[0]["sha256"] == assets[0]["sha256"] and exc.value.assets[1] is None
    else:
        with pytest.raises(ApiError) as exc:
            client.upload([paths[0], broken])
        assert (exc.value.status, exc.value.code, exc.value.field) == (400, "invalid_image", "files")
        assert "broken.png" in exc.value.message


def test_client_jobs_wait_retry_cancel_download(system: System, tmp_path: Path) -> None:
    client = Client(system.base_url, system.token)
    images = distinct_pngs(3, seed=406)
    for i, data in enumerate(images):
        (tmp_path / f"c{i}.png").write_bytes(data)
    keys = [a["key"] for a in client.upload(sorted(tmp_path.glob("c*.png")))]

    with pytest.raises(ApiError) as exc:
        client.create("echo", keys, params={"fail": "sometimes"})
    assert exc.value.status == 400 and exc.value.field and "fail" in exc.value.field

    job = client.create("echo", [keys[0], {"key": keys[1], "params": {"fail": "fatal"}}, keys[2]])
    seen: list[dict] = []
    done = client.wait(job["id"], on_progress=seen.append, interval=1)
    assert done["status"] == "failed" and done["counts"]["failed"] == 1
    assert seen[-1]["status"] == "failed"
    assert client.retry(job["id"])["retried"] == 1
    assert client.wait(job["id"])["counts"]["failed"] == 1  # fails again: the failure is in its params

    paths = client.download(job["id"], tmp_path / "out", names=["x/first.png", "second.png", "third.png"])
    assert sorted(p.name for p in paths) == ["first.png", "third.png"]
    assert (tmp_path / "out" / "third.png").read_bytes() == images[2]

    slow = client.create("echo", keys[:1], params={"delay_s": 30})
    with pytest.raises(TimeoutError):
        client.wait(slow["id"], timeout=1.5)
    assert client.cancel(slow["id"])["job"]["status"] == "cancelled"
    assert client.wait(slow["id"], timeout=30)["status"] == "cancelled"
