"""Retention on the control worker's schedule: old outputs and inputs go, live work keeps everything.

Time is moved in the database (a job that finished "two days ago"), the sweep runs from beat every
second, and storage is read directly to see what is left.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from app.models import Asset, Item, Job
from tests.conftest import System
from tests.ops.helpers import engine, wait_for_epoch, wait_until
from tests.support import distinct_pngs


def test_retention_removes_old_outputs_and_inputs_but_never_what_live_work_needs(observed: System) -> None:
    # OUTPUT_RETENTION_DAYS=1, INPUT_RETENTION_DAYS=1, RETENTION_INTERVAL_S=1, ORPHAN_GRACE_S=0.
    sysm = observed
    api, store = sysm.api, sysm.store()
    wait_for_epoch(sysm)
    old_only = api.upload(distinct_pngs(2, seed=81))
    shared = api.upload(distinct_pngs(1, seed=82))
    live_only = api.upload(distinct_pngs(3, seed=83))
    recent_only = api.upload(distinct_pngs(1, seed=84))

    # Old: finished, and about to be two days old.
    old = api.wait(api.submit(old_only + shared)["id"])
    assert old["status"] == "succeeded"
    old_outputs = [o["key"] for i in old["items"] for o in i["outputs"]]
    assert len(old_outputs) == 3 and all(store.exists(k) for k in old_outputs)

    # Recent: finished now, one item retried. A stray object under its failed first attempt is an
    # orphan; one under an attempt newer than the item's (a concurrent retry) must be left alone.
    recent = api.submit(recent_only, params={"fail": "first_attempt", "delay_s": 0.5})
    item_id = api.job(recent["id"])["items"][0]["id"]
    orphan = f"outputs/{recent['id']}/{item_id}/1/partial.bin"
    newer = f"outputs/{recent['id']}/{item_id}/3/echo.png"
    store.put_bytes(orphan, b"left behind by a lost attempt", "application/octet-stream")
    store.put_bytes(newer, b"written by a later attempt", "image/png")
    recent = api.wait(recent["id"])
    assert recent["status"] == "succeeded" and recent["items"][0]["attempt"] == 2
    kept_output = recent["items"][0]["outputs"][0]["key"]

    # Live: still running while the sweep happens, created "three days ago" with old inputs.
    live = api.submit(live_only + shared, params={"delay_s": 1.5, "queue": "wan_local"})
    first = api.wait_item(live["id"], lambda i: i["status"] == "succeeded", timeout=30)
    live_output = first["outputs"][0]["key"]

    now = datetime.now(UTC)
    eng = engine(sysm)
    with eng.begin() as conn:
        conn.execute(
            sa.update(Job.__table__)
            .where(Job.__table__.c.id == old["id"])
            .values(created_at=now - timedelta(days=3), finished_at=now - timedelta(days=2))
        )
        conn.execute(
            sa.update(Item.__table__)
            .where(Item.__table__.c.job_id == old["id"])
            .values(finished_at=now - timedelta(days=2))
        )
        conn.execute(
            sa.update(Job.__table__)
            .where(Job.__table__.c.id == live["id"])
            .values(created_at=now - timedelta(days=3))
        )
        mine = old_only + shared + live_only + recent_only
        conn.execute(
            sa.update(Asset.__table__)
            .where(Asset.__table__.c.key.in_(mine))
            .values(created_at=now - timedelta(days=3))
        )

    def expired() -> dict | None:
        job = api.job(old["id"])
        return job if all(not i["outputs"] for i in job["items"]) else None

    gone = wait_until(expired, 30, "outputs of the two-day-old job removed")
    assert gone["status"] == "succeeded" and gone["counts"]["succeeded"] == 3
    assert not any(store.exists(k) for k in old_outputs)
    assert store.list(prefix=f"outputs/{old['id']}/")[0] == []
    assert any(e["kind"] == "job.outputs_expired" for e in api.events(old["id"]))
    wait_until(lambda: not any(store.exists(k) for k in old_only), 30, "old inputs removed")
    with eng.connect() as conn:
        assets = set(conn.execute(sa.select(Asset.__table__.c.key)).scalars())
        expired_at = conn.execute(
            sa.select(Job.__table__.c.outputs_expired_at).where(Job.__table__.c.id == old["id"])
        ).scalar_one()
    assert expired_at is not None
    assert not assets & set(old_only)

    # The running job's inputs (also the one it shares with the old job) and outputs stay; so do the
    # recent job's input and its recorded attempt. The orphan goes, the newer attempt stays.
    wait_until(lambda: not store.exists(orphan), 30, "the orphan attempt directory removed")
    missing = [k for k in live_only + shared + recent_only if not store.exists(k)]
    assert not missing, (missing, live_only, shared, recent_only)
    assert set(live_only + shared + recent_only) <= assets
    assert store.exists(live_output) and store.exists(kept_output) and store.exists(newer)
    assert api.job(live["id"])["status"] in ("queued", "running")

    done = api.wait(live["id"], timeout=60)
    assert done["status"] == "succeeded"
    assert all(store.exists(o["key"]) for i in done["items"] for o in i["outputs"])
    eng.dispose()
