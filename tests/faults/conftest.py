"""Fault-injection harness: isolated systems, a Postgres cluster the test may stop, result records.

Every scenario runs at least 100 items through a system of its own, injects one fault, waits
for the job to finish and checks: no item lost, none recorded twice, attempts within the limit,
counts right, and the event log tells what happened. Each scenario's figures are appended to
artifacts/reliability.jsonl; `python -m tests.faults.render` turns them into docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bulkgen_stack.processes import free_port
from tests.conftest import System, SystemFactory

RESULTS = Path(os.environ.get("RELIABILITY_OUT", "artifacts/reliability.jsonl"))


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (apt-get install postgresql)")
    return found


class Postgres:
    """A throwaway PostgreSQL cluster on a free port that a test can stop, start and restart."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="bulkgen-pg-"))
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:  # initdb refuses to run as root
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(
            _pg_bin("initdb"),
            "-D",
            str(self.dir / "data"),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        )
        self.start()
        self._run(_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "bulkgen")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/bulkgen"

    def _run(self, *argv: str) -> None:
        cmd = ["runuser", "-u", "postgres", "--", *argv] if self.as_root else list(argv)
        subprocess.run(cmd, check=True, capture_output=True, cwd=self.dir)

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            _pg_bin("pg_ctl"),
            "-D",
            str(self.dir / "data"),
            "-o",
            opts,
            "-l",
            str(self.dir / "log"),
            "-w",
            "start",
        )

    def stop(self) -> None:
        self._run(_pg_bin("pg_ctl"), "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(autouse=True)
def stop_the_scenarios_system(systems: SystemFactory) -> Iterator[None]:
    """Each scenario's system stops with it: a dozen idle stacks would load the machine."""
    before = len(systems.started)
    yield
    systems.stop_since(before)


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    pg = Postgres()
    yield pg
    pg.destroy()


@dataclass
class Outcome:
    scenario: str
    job: dict
    system: System
    recovery_s: float | None = None
    notes: list[str] = field(default_factory=list)

    def items(self) -> list[dict]:
        return self.job["items"]

    def check(self, expect: str = "succeeded", max_attempts: int = 3, record: bool = True) -> dict:
        """The invariants every scenario must keep; returns the figures recorded for it
        (`record=False`: a second job of a scenario, checked but not a row of its own)."""
        api = self.system.api
        items = self.items()
        events = api.events(self.job["id"])
        finals = Counter(
            e["item_id"]
            for e in events
            if e["item_id"] and e["to_status"] in ("succeeded", "failed", "cancelled")
        )
        lost = [i["id"] for i in items if i["status"] not in ("succeeded", "failed", "cancelled")]
        if expect == "succeeded":
            lost += [i["id"] for i in items if i["status"] != "succeeded"]
        duplicated = [i for i, n in finals.items() if n > 1]
        # The event log tells every item's outcome.
        untold = [i["id"] for i in items if i["status"] in ("succeeded", "failed") and finals[i["id"]] == 0]
        orphans = 0
        for item in items:
            sets = self.system.output_sets(self.job["id"], item["id"])
            if item["status"] == "succeeded":
                # One recorded output set: every output under the recorded attempt, whose manifest exists.
                prefix = f"outputs/{self.job['id']}/{item['id']}/{item['attempt']}/"
                assert len(item["outputs"]) >= 1, item
                assert all(o["key"].startswith(prefix) for o in item["outputs"]), item
                if str(item["attempt"]) not in sets:
                    lost.append(item["id"])
                orphans += len([a for a in sets if a != str(item["attempt"])])
            else:
                assert item["outputs"] == [], item
                orphans += len(sets)
        over = [i["id"] for i in items if i["attempt"] > max_attempts]
        counts = Counter(i["status"] for i in items)
        assert self.job["counts"] == {s: counts.get(s, 0) for s in self.job["counts"]}, (
            self.job["counts"],
            counts,
        )
        if lost:
            # What happened to the first of them, so a failure says more than an id.
            first = next(i for i in items if i["id"] == lost[0])
            story = [
                (e["kind"], e["to_status"], e["attempt"], e["detail"])
                for e in events
                if e["item_id"] == lost[0]
            ]
            raise AssertionError(
                f"{self.scenario}: {len(lost)} items lost: {lost[:5]}; the first is {first['status']} "
                f"(attempt {first['attempt']}, error {first['error']!r}); its events: {story}"
            )
        assert not duplicated, f"{self.scenario}: {len(duplicated)} items recorded twice"
        assert not over, f"{self.scenario}: attempts over the limit: {over[:5]}"
        assert not untold, f"{self.scenario}: outcomes missing from the event log: {untold[:5]}"
        figures = {
            "scenario": self.scenario,
            "items": len(items),
            "succeeded": counts.get("succeeded", 0),
            "failed": counts.get("failed", 0),
            "cancelled": counts.get("cancelled", 0),
            "lost": len(lost),
            "duplicated": len(duplicated),
            "retried": sum(i["attempt"] - 1 for i in items),
            # Output sets of attempts that were not recorded (a superseded attempt that still
            # finished); retention removes them.
            "orphan_sets": orphans,
            "recovery_s": None if self.recovery_s is None else round(self.recovery_s, 1),
            "notes": "; ".join(self.notes),
            "database": "postgres" if "postgresql" in self.system.env["DATABASE_URL"] else "sqlite",
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if record:
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            with RESULTS.open("a") as f:
                f.write(json.dumps(figures) + "\n")
        return figures


class FlakyStorageProxy:
    """An HTTP proxy in front of an S3 server that can make uploads fail (503, as S3 answers when
    it is overloaded) while reads and listings still work."""

    def __init__(self, target_port: int) -> None:
        import http.client
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        proxy = self
        self.failing = threading.Event()
        self.refused = 0

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.command in ("PUT", "POST") and proxy.failing.is_set():
                    proxy.refused += 1
                    error = (
                        b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>ServiceUnavailable</Code>"
                        b"<Message>Please reduce your request rate.</Message></Error>"
                    )
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(error)))
                    self.end_headers()
                    self.wfile.write(error)
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", target_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                upstream.request(self.command, self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                # HEAD answers carry the object's length without its bytes: pass it through.
                keep_length = self.command == "HEAD"
                for key, value in answer.getheaders():
                    if key.lower() in ("transfer-encoding", "connection"):
                        continue
                    if key.lower() != "content-length" or keep_length:
                        self.send_header(key, value)
                if not keep_length:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                upstream.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
