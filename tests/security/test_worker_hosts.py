"""GPU and API hosts are not trusted: no storage keys, a revocable worker token, proofs per item.

Workers run with the broker URL and a worker token only. They touch storage through per-item
grants (presigned URLs) and speak only for the items they were sent (a proof per item and attempt).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from app.coordination import Coordination, lease_key
from app.proofs import item_proof
from app.storage import S3Storage
from tests.conftest import System, SystemFactory
from tests.support import Api, distinct_pngs

ITEM_QUEUES = ("wan_local", "sam3", "runway")
# Nothing a rented host may hold beyond the broker URL and its worker token.
FORBIDDEN = {
    "DATABASE_URL",
    "STORAGE_DIR",
    "STORAGE_BACKEND",
    "SECRET_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
}
FORBIDDEN_PREFIXES = ("S3_", "PG")


@pytest.fixture
def own_systems(systems: SystemFactory) -> Iterator[SystemFactory]:
    """Systems this test starts are stopped when it ends (Postgres has room for only so many)."""
    count = len(systems.started)
    yield systems
    systems.stop_since(count)


def environment(pid: int) -> set[str]:
    return {e.split(b"=", 1)[0].decode() for e in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if e}


def assert_holds_no_keys(sysm: System, names: tuple[str, ...] = ITEM_QUEUES) -> None:
    for name in names:
        env = environment(sysm.stack.procs[name].pid)
        assert not env & FORBIDDEN, (name, env & FORBIDDEN)
        assert not [n for n in env if n.startswith(FORBIDDEN_PREFIXES)], name
        assert "BULKGEN_WORKER_TOKEN" in env and "REDIS_URL" in env


def run_spread_job(api: Api, n: int, seed: int) -> tuple[dict[str, Any], list[bytes]]:
    images = distinct_pngs(n, seed=seed)
    keys = api.upload(images)
    job = api.wait(api.submit(keys, params={"queue": "spread"})["id"], timeout=180)
    assert job["status"] == "succeeded", job["counts"]
    # Every item queue did work.
    assert {i["queue"] for i in job["items"]} == set(ITEM_QUEUES)
    return job, images


def test_workers_without_storage_keys_complete_a_job_on_local_storage(system: System, api: Api) -> None:
    assert_holds_no_keys(system)
    job, images = run_spread_job(api, 6, seed=140)
    for item in job["items"]:
        out = item["outputs"][0]
        assert out["key"].startswith(f"outputs/{job['id']}/{item['id']}/1/")
        # The echo output is the input: it went down and up again through presigned URLs.
        assert requests.get(out["url"], timeout=30).content in images
        assert system.store().get_bytes(out["key"]) == system.store().get_bytes(item["input_key"])


def test_workers_without_storage_keys_complete_a_job_on_s3(
    own_systems: SystemFactory, moto_endpoint: str
) -> None:
    env = {
        "STORAGE_BACKEND": "s3",
        "S3_BUCKET": "bulkgen-hosts",
        "S3_ENDPOINT_URL": moto_endpoint,
        "S3_REGION": "us-east-1",
        "S3_ACCESS_KEY_ID": "test",
        "S3_SECRET_ACCESS_KEY": "test",
    }
    sysm = own_systems.start("hosts-s3", env=env)
    assert_holds_no_keys(sysm)
    job, _ = run_spread_job(sysm.api, 6, seed=141)
    store = S3Storage("bulkgen-hosts", moto_endpoint, "us-east-1", "test", "test")
    for item in job["items"]:
        listed, _ = store.list(prefix=f"outputs/{job['id']}/{item['id']}/1/")
        assert sorted(o.key.rsplit("/", 1)[-1] for o in listed) == ["echo.png", "manifest.json"]
        assert store.get_bytes(item["outputs"][0]["key"]) == store.get_bytes(item["input_key"])


def _worker_token(sysm: System, name: str) -> str:
    return sysm.stack.flask("create-worker-token", name).stdout.strip().splitlines()[-1]


def _worker_token_id(sysm: System, name: str) -> int:
    for line in sysm.stack.flask("list-worker-tokens").stdout.splitlines():
        fields = line.split("\t")
        if len(fields) >= 3 and fields[2] == name:
            return int(fields[0])
    raise AssertionError(f"no worker token {name}")


def test_revoked_worker_token_stops_its_host_and_another_takes_over(own_systems: SystemFactory) -> None:
    sysm = own_systems.start("hosts-revoke", workers=("control",))
    tokens = {"wan_a": _worker_token(sysm, "host-a"), "wan_b": _worker_token(sysm, "host-b")}
    for name, token in tokens.items():
        sysm.stack.start_worker(
            "wan_local", name=name, concurrency=1, extra_env={"BULKGEN_WORKER_TOKEN": token}
        )
    sysm.stack.wait_workers(list(tokens))
    keys = sysm.api.upload(distinct_pngs(60, seed=142))
    job_id = sysm.api.submit(keys, params={"queue": "wan_local", "delay_s": 0.5})["id"]
    # Host A has done real work before its token goes, and work remains after.
    sysm.api.wait_item(
        job_id, lambda i: i["status"] == "succeeded" and (i["worker"] or "").startswith("wan_a")
    )
    sysm.stack.flask("revoke-worker-token", str(_worker_token_id(sysm, "host-a")))
    assert sysm.api.job(job_id)["counts"]["succeeded"] < 40

    job = sysm.api.wait(job_id, timeout=180)
    assert job["status"] == "succeeded" and job["counts"]["succeeded"] == 60, job["counts"]
    # Host A was refused at its next request and stopped (a clean stop: nothing restarts it).
    proc_a = sysm.stack.procs["wan_a"]
    deadline = time.monotonic() + 60
    while proc_a.alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not proc_a.alive()
    assert "refused this host's worker token" in proc_a.log()
    # Host B took over: it finished the job's last item, and whatever host A had in hand when its
    # token went (an item it could no longer commit) ran again on host B.
    last = max(job["items"], key=lambda i: i["finished_at"])
    assert last["worker"].startswith("wan_b")
    for event in sysm.api.events(job_id):
        if event["kind"] == "item.retry":
            assert "worker token" in (event["detail"] or ""), event
            item = next(i for i in job["items"] if i["id"] == event["item_id"])
            assert item["worker"].startswith("wan_b")
    # The token opens nothing any more, and a host started with it exits at once, for good.
    r = requests.get(f"{sysm.base_url}/api/v1/worker/hello", headers=_bearer(tokens["wan_a"]), timeout=10)
    assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]
    sysm.stack.start_worker(
        "wan_local", name="wan_c", concurrency=1, extra_env={"BULKGEN_WORKER_TOKEN": tokens["wan_a"]}
    )
    proc_c = sysm.stack.procs["wan_c"]
    proc_c.popen.wait(timeout=60)
    assert proc_c.popen.returncode == 78
    assert "refused this host's worker token" in proc_c.log()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _running_item(api: Api, delay_s: float, seed: int) -> tuple[str, dict[str, Any]]:
    keys = api.upload(distinct_pngs(1, seed=seed))
    job_id = api.submit(keys, params={"queue": "wan_local", "delay_s": delay_s})["id"]
    return job_id, api.wait_item(job_id, lambda i: i["status"] == "running")


def _wait_for(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_forged_reports_for_another_workers_item_change_nothing(system: System, api: Api) -> None:
    job_id, item = _running_item(api, delay_s=6.0, seed=143)
    coord = Coordination(system.redis())
    secret = system.env["SECRET_KEY"]
    base = {
        "item_id": item["id"],
        "job_id": job_id,
        "attempt": 1,
        "input_key": item["input_key"],
        "at": time.time(),
        "worker": "mallory",
    }
    inside = [
        {"key": f"outputs/{job_id}/{item['id']}/1/echo.png", "content_type": "image/png", "role": "echo"}
    ]
    forged = [
        # Valid shape, wrong proof: a success, a failure and a cancel.
        {**base, "state": "succeeded", "outputs": inside, "proof": "0" * 64},
        {**base, "state": "failed", "error": "forged", "retryable": False, "proof": "0" * 64},
        {**base, "state": "cancelled", "proof": item_proof(job_id, item["id"], 2, item["input_key"], secret)},
        # A valid proof, but outputs outside the item's attempt prefix.
        {
            **base,
            "state": "succeeded",
            "proof": item_proof(job_id, item["id"], 1, item["input_key"], secret),
            "outputs": [
                {"key": f"inputs/{item['input_key'].rsplit('/', 1)[-1]}", "content_type": "image/png"}
            ],
        },
        {
            **base,
            "state": "succeeded",
            "proof": item_proof(job_id, item["id"], 1, item["input_key"], secret),
            "outputs": [
                {
                    "key": f"outputs/{job_id}/{item['id']}/1/../../../other/1/x.png",
                    "content_type": "image/png",
                }
            ],
        },
    ]
    for report in forged:
        coord.push_report(report, final=False)
    control = system.stack.procs["control"]
    _wait_for(
        lambda: control.log().count(f"without a valid proof for its item: {{'item_id': '{item['id']}'") >= 3
    )
    _wait_for(
        lambda: control.log().count(f"success of item {item['id']} attempt 1 naming outputs outside") >= 2
    )
    # Every forged report was read and refused while the item still ran: it is as it was.
    now = api.job(job_id)["items"][0]
    assert now["status"] == "running" and now["worker"] == item["worker"] and not now["outputs"]
    done = api.wait(job_id)
    assert done["status"] == "succeeded"
    final = done["items"][0]
    assert final["worker"] == item["worker"] and final["attempt"] == 1
    assert [o["key"] for o in final["outputs"]] == [inside[0]["key"]]
    kinds = [e["kind"] for e in api.events(job_id) if e["item_id"] == item["id"]]
    assert "item.failed" not in kinds and "item.cancelled" not in kinds


def test_grants_refuse_what_a_host_was_not_given(system: System, api: Api) -> None:
    job_id, item = _running_item(api, delay_s=6.0, seed=144)
    secret = system.env["SECRET_KEY"]
    url = f"{system.base_url}/api/v1/worker/grants"
    good = _bearer(system.stack.worker_token or "")
    ident = {
        "item_id": item["id"],
        "job_id": job_id,
        "attempt": 1,
        "input_key": item["input_key"],
        "proof": item_proof(job_id, item["id"], 1, item["input_key"], secret),
    }
    prefix = f"outputs/{job_id}/{item['id']}/1/"

    def post(kind: str, body: dict[str, Any], headers: dict[str, str] = good) -> requests.Response:
        return requests.post(f"{url}/{kind}", json=body, headers=headers, timeout=10)

    # No token, a user's API token, a made-up token: refused before anything is looked at.
    assert post("read", ident, {}).status_code == 401
    assert post("read", ident, _bearer(system.token)).status_code == 401
    assert post("read", ident, _bearer("bgw_" + "x" * 43)).status_code == 401
    # Another item's proof, or another attempt's.
    r = post("read", {**ident, "proof": item_proof(job_id, item["id"], 2, item["input_key"], secret)})
    assert r.status_code == 403 and r.json()["error"]["code"] == "bad_proof"
    r = post("read", {**ident, "item_id": "0" * 32})
    assert r.status_code == 403
    # The proof covers the input: it opens no other object.
    r = post("read", {**ident, "input_key": "inputs/someone-elses-photo.png"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "bad_proof"
    # The right proof but not the delivery the system stands behind (no or a stale dispatch token).
    r = post("read", {**ident, "dispatch": "stale"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "recalled"
    # Writes need the lease the running worker holds.
    outputs = [{"key": prefix + "evil.png", "content_type": "image/png"}]
    r = post("write", {**ident, "lease": "not-the-lease", "outputs": outputs})
    assert r.status_code == 409 and r.json()["error"]["code"] == "lease_not_held"
    lease = system.redis().get(lease_key(item["id"])).decode()
    holder = lease.split("|", 1)[1]
    # Even with the lease: nothing outside the attempt's prefix.
    for key in (f"outputs/{job_id}/{item['id']}/2/x.png", item["input_key"], prefix + "../2/x.png"):
        r = post("write", {**ident, "lease": holder, "outputs": [{"key": key, "content_type": "image/png"}]})
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_output", (key, r.text)
    r = post("write", {**ident, "lease": holder, "outputs": outputs})
    assert r.status_code == 200
    [put] = r.json()["puts"]
    assert put["key"] == outputs[0]["key"]
    # The URL grants that object only, with that content type.
    assert (
        requests.put(put["url"], data=b"x", headers={"Content-Type": "text/html"}, timeout=10).status_code
        == 403
    )
    other = put["url"].replace("evil.png", "other.png")
    assert (
        requests.put(other, data=b"x", headers={"Content-Type": "image/png"}, timeout=10).status_code == 403
    )
    # A granted JSON object is stored whatever its size: the API's JSON body limit is not a storage limit.
    big = {"key": prefix + "masks.json", "content_type": "application/json"}
    [put] = post("write", {**ident, "lease": holder, "outputs": [big]}).json()["puts"]
    body = b"[" + b"0," * (1024 * 1024) + b"0]"
    r = requests.put(put["url"], data=body, headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 200, r.text[:200]
    assert system.store().get_bytes(big["key"]) == body
    api.wait(job_id)
