"""Access control: who may reach what, and what never leaks."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import requests
import sqlalchemy as sa

from tests.conftest import System, SystemFactory
from tests.support import Api, distinct_pngs

# Reachable without a session or token: liveness/readiness, the login page and static files;
# storage files carry their own signature instead.
PUBLIC = ("/healthz", "/readyz", "/login", "/static/", "/files/", "/metrics")


def routes(system: System) -> list[tuple[str, str]]:
    """Every (method, rule) the web app serves, read from the app itself."""
    code = (
        "import json, web; app = web.create_app(); "
        "print(json.dumps([[m, r.rule] for r in app.url_map.iter_rules() for m in sorted(r.methods - {'HEAD', 'OPTIONS'})]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=system.env, capture_output=True, text=True, check=True
    )
    return [tuple(x) for x in json.loads(out.stdout.strip().splitlines()[-1])]


def test_every_route_refuses_anonymous_visitors(system: System) -> None:
    checked = 0
    for method, rule in routes(system):
        if rule.startswith(PUBLIC):
            continue
        path = rule.replace("<job_id>", "x").replace("<item_id>", "x").replace("<path:key>", "inputs/x.png")
        path = re.sub(r"<int:\w+>", "1", path).replace("<", "").replace(">", "")
        r = requests.request(method, system.base_url + path, allow_redirects=False, timeout=30)
        if path.startswith("/api/"):
            assert r.status_code == 401, (method, rule, r.status_code)
            assert r.json()["error"]["code"] == "unauthorized"
        else:
            assert r.status_code in (302, 303, 401, 403), (method, rule, r.status_code)
            if r.status_code in (302, 303):
                assert "/login" in r.headers["Location"], (method, rule)
        checked += 1
    assert checked >= 15


def test_tokens_are_hashed_at_rest_and_revocable(system: System) -> None:
    system.stack.flask("create-user", "revoker@example.com", "--password", "pw-7654321")
    token = system.stack.flask("create-token", "revoker@example.com").stdout.strip().splitlines()[-1]
    api = Api(system.base_url, token)
    assert api.get("/api/v1/jobs").status_code == 200

    engine = sa.create_engine(
        system.env["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg2://", 1)
    )
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, token_hash, prefix FROM api_tokens")).all()
        dump = json.dumps(
            [[str(c) for c in r] for r in conn.execute(sa.text("SELECT * FROM api_tokens")).all()]
        )
    engine.dispose()
    assert token not in dump and token[10:] not in dump
    mine = [r for r in rows if r.token_hash == hashlib.sha256(token.encode()).hexdigest()]
    assert len(mine) == 1

    listing = system.stack.flask("list-tokens", "revoker@example.com").stdout
    assert token not in listing and str(mine[0].id) in listing
    system.stack.flask("revoke-token", str(mine[0].id))
    r = api.get("/api/v1/jobs")
    assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]


def test_signed_urls_expire_and_tampering_is_refused(systems: SystemFactory) -> None:
    sysm = systems.start("short-urls", workers=("control", "wan_local"), env={"SIGNED_URL_TTL_S": "2"})
    job = sysm.api.wait(sysm.api.submit(sysm.api.upload(distinct_pngs(1, seed=70)))["id"])
    url = job["items"][0]["outputs"][0]["url"]
    assert requests.get(url, timeout=10).status_code == 200
    for tampered in (
        url.replace("sig=", "sig=a"),
        url.replace("exp=", "exp=9"),
        url.replace("/echo.png", "/manifest.json"),
    ):
        assert requests.get(tampered, timeout=10).status_code in (403, 404), tampered
    time.sleep(3)
    assert requests.get(url, timeout=10).status_code == 403


def test_workers_hold_only_their_own_secrets_and_nothing_leaks(systems: SystemFactory) -> None:
    secret_key = "s3cr3t-" + os.urandom(8).hex()
    runway_key = "rk-" + os.urandom(8).hex()
    env = {
        "SECRET_KEY": secret_key,
        "RUNWAYML_API_SECRET": runway_key,
        "RUNWAY_BASE_URL": "http://127.0.0.1:9",
    }
    sysm = systems.start("secrets", env=env)

    def environ(name: str) -> dict[str, str]:
        raw = Path(f"/proc/{sysm.stack.procs[name].pid}/environ").read_bytes().split(b"\0")
        return dict(e.decode().split("=", 1) for e in raw if b"=" in e)

    assert environ("runway")["RUNWAYML_API_SECRET"] == runway_key
    for name in ("web", "control", "wan_local", "sam3"):
        assert "RUNWAYML_API_SECRET" not in environ(name), name
    for name in ("wan_local", "sam3", "runway"):
        assert "DATABASE_URL" not in environ(name), name

    # Work through the system, including a failure and an unauthorized call, then search every
    # log and API answer for the secrets.
    api = sysm.api
    job = api.wait(api.submit(api.upload(distinct_pngs(2, seed=71)), params={"queue": "spread"})["id"])
    api.wait(api.submit(api.upload(distinct_pngs(1, seed=72)), params={"fail": "fatal"})["id"])
    requests.get(f"{sysm.base_url}/api/v1/jobs", headers={"Authorization": "Bearer nope"}, timeout=10)
    answers = "".join(
        api.get(p).text
        for p in (
            "/api/v1/providers",
            "/api/v1/queues",
            "/api/v1/stats",
            f"/api/v1/jobs/{job['id']}",
            "/api/v1/jobs",
        )
    )
    logs = "".join(p.log() for p in sysm.stack.procs.values())
    db_url = sysm.env["DATABASE_URL"]
    for secret in (secret_key, runway_key, sysm.token):
        assert secret not in answers
        assert secret not in logs
    if "@" in db_url and ":" in db_url.split("@")[0].split("//")[1]:
        assert db_url.split("@")[0].split(":")[-1] not in logs
