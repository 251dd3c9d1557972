"""Micro-batching on a GPU worker: items waiting on one device share a forward pass
(WORKER_BATCH_SIZE), and each keeps its own lease, outputs, attempt and outcome."""

from __future__ import annotations

import json

import pytest

from tests.conftest import System, SystemFactory, dump_logs
from tests.support import distinct_pngs

BATCH = 4


@pytest.fixture(scope="module")
def sysm(systems: SystemFactory) -> System:
    return systems.start("batching", workers=("control", "sam3"), env={"WORKER_BATCH_SIZE": str(BATCH)})


def test_waiting_items_run_together_each_with_its_own_outcome(sysm: System) -> None:
    keys = sysm.api.upload(distinct_pngs(9, seed=100))
    job = sysm.api.submit(keys, params={"delay_s": 0.5, "queue": "sam3"})
    done = sysm.api.wait(job["id"], timeout=120)
    assert done["status"] == "succeeded", (done["counts"], dump_logs(sysm, ("sam3",)))
    sizes = [i["meta"].get("batch_size", 1) for i in done["items"]]
    # The first item runs alone (nothing else had arrived); the rest were waiting and ran in batches.
    assert max(sizes) > 1 and all(s <= BATCH for s in sizes), sizes
    for item in done["items"]:
        assert (item["attempt"], sysm.output_sets(job["id"], item["id"])) == (1, ["1"])
        (out,) = item["outputs"]
        assert out["role"] == "echo"


def test_sam3_batches_images_with_their_own_concepts(sysm: System) -> None:
    keys = sysm.api.upload(distinct_pngs(6, seed=101))
    concepts = [["cat"], ["dog", "ball"], ["tree"], ["cat", "sky", "car"], ["person"], ["road"]]
    jobs = [sysm.api.submit([key], provider="sam3", prompts=c) for key, c in zip(keys, concepts, strict=True)]
    done = [sysm.api.wait(j["id"], timeout=180) for j in jobs]
    assert all(j["status"] == "succeeded" for j in done), ([j["counts"] for j in done], dump_logs(sysm))
    items = [j["items"][0] for j in done]
    for item, asked in zip(items, concepts, strict=True):
        report = json.loads(sysm.store().get_bytes(_key(item, "instances")))
        assert [c["concept"] for c in report["concepts"]] == asked
    assert max(i["meta"].get("batch_size", 1) for i in items) > 1, [i["meta"] for i in items]


def _key(item: dict, role: str) -> str:
    return next(o["key"] for o in item["outputs"] if o["role"] == role)
