"""Per-image work through the API and a running system: a prompt (and parameters) per photo, a
whole folder as one job, prompts from a CSV or JSONL file."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import System, SystemFactory
from tests.support import Api, distinct_pngs, png_bytes


@pytest.fixture(scope="module")
def sysm(systems: SystemFactory) -> System:
    return systems.start("per_item", workers=("control", "wan_local"))


def error_of(r: Any, status: int = 400) -> dict[str, Any]:
    assert r.status_code == status, r.text
    return r.json()["error"]


def by_key(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {i["input_key"]: i for i in job["items"]}


def test_a_prompt_and_parameters_per_photo(sysm: System) -> None:
    api = sysm.api
    keys = api.upload(distinct_pngs(3, seed=91))
    job = api.submit(
        [
            {"key": keys[0], "prompt": "she laughs and turns to the camera"},
            keys[1],
            {"key": keys[2], "prompt": "the dog runs toward us", "params": {"delay_s": 0.2}},
        ],
        prompt="a slow pan",
        params={"delay_s": 0.0},
    )
    done = api.wait(job["id"], timeout=60)
    assert done["status"] == "succeeded", [i["error"] for i in done["items"]]
    items = by_key(done)
    # What each item shows is what it ran with: its own, else the job's ...
    assert [items[k]["prompt"] for k in keys] == [
        "she laughs and turns to the camera",
        "a slow pan",
        "the dog runs toward us",
    ]
    assert [items[k]["params"] for k in keys] == [{}, {}, {"delay_s": 0.2}]
    # ... and what the provider received, as it recorded it.
    assert [items[k]["meta"]["prompt"] for k in keys] == [items[k]["prompt"] for k in keys]
    assert done["prompt"] == "a slow pan" and done["params"]["delay_s"] == 0.0


def test_every_photo_may_bring_its_own_prompt_and_the_job_none(sysm: System) -> None:
    api = sysm.api
    keys = api.upload(distinct_pngs(2, seed=92))
    job = api.submit([{"key": k, "prompt": f"prompt {i}"} for i, k in enumerate(keys)])
    done = api.wait(job["id"], timeout=60)
    assert done["prompt"] is None
    assert sorted(i["meta"]["prompt"] for i in done["items"]) == ["prompt 0", "prompt 1"]


def test_a_bad_entry_names_itself_and_stores_nothing(sysm: System) -> None:
    api = sysm.api
    key = api.upload([png_bytes(20, 20, (1, 2, 3))])[0]
    before = api.get("/api/v1/jobs").json()["jobs"]
    err = error_of(
        api.post(
            "/api/v1/jobs",
            json={"provider": "echo", "inputs": [key, {"key": key, "params": {"fail": "sometimes"}}]},
        )
    )
    assert err["field"] == "inputs[1].params.fail" and "inputs[1]" in err["message"]
    assert api.get("/api/v1/jobs").json()["jobs"] == before


def put_folder(sysm: System, prefix: str, n: int) -> list[str]:
    """n small PNGs under `prefix`, written straight into storage (as a team's bucket holds them),
    with a file that is not an image beside them."""
    store = sysm.store()
    data = png_bytes(8, 8, (10, 200, 30))
    keys = [f"{prefix}photo-{i:05d}.png" for i in range(n)]
    for key in keys:
        store.put_bytes(key, data, "image/png")
    store.put_bytes(f"{prefix}notes.txt", b"not an image", "text/plain")
    return keys


def test_a_folder_of_two_thousand_images_is_one_job(sysm: System) -> None:
    api = sysm.api
    keys = put_folder(sysm, "photos/2026-12/", 2000)
    r = api.post(
        "/api/v1/jobs", json={"provider": "echo", "inputs_prefix": "photos/2026-12/", "prompt": "go"}
    )
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["total"] == 2000
    # Paced by the scheduler: most of the folder waits in the database, not in the broker.
    assert job["counts"]["pending"] >= 1900, job["counts"]
    created = [e for e in api.events(job["id"]) if e["kind"] == "job.created"]
    assert created[0]["detail"].startswith("2000 items from photos/2026-12/")
    done = api.wait(job["id"], timeout=600)
    assert done["status"] == "succeeded" and done["counts"]["succeeded"] == 2000
    # Items run in the folder's key order (the non-image was left out).
    page = api.get(f"/api/v1/jobs/{job['id']}", params={"items_limit": 5}).json()
    assert [i["input_key"] for i in page["items"]] == keys[:5]


def upload_prompts(api: Api, name: str, text: str) -> dict[str, Any]:
    r = api.s.post(
        api.url("/api/v1/prompt-files"), files={"file": (name, text.encode(), "text/csv")}, timeout=30
    )
    assert r.status_code == 201, r.text
    return r.json()


def test_prompts_from_a_csv_file_by_uploaded_name(sysm: System) -> None:
    api = sysm.api
    keys = api.upload(distinct_pngs(3, seed=93), names=["cat.png", "dog.png", "bird.png"])
    csv_text = (
        "file,prompt,delay_s\n"
        'cat.png,"she laughs, then ""waves""",0.1\n'
        "dog.png,le chien court vers nous,\n"
        "ghost.png,matches no image,\n"
    )
    made = upload_prompts(api, "prompts.csv", csv_text)
    assert made["rows"] == 3 and made["key"].endswith(".csv")
    job = api.submit(keys, prompt="default prompt", prompts_file=made["key"])
    done = api.wait(job["id"], timeout=60)
    items = by_key(done)
    assert [items[k]["prompt"] for k in keys] == [
        'she laughs, then "waves"',
        "le chien court vers nous",
        "default prompt",
    ]
    assert items[keys[0]]["params"] == {"delay_s": 0.1} and items[keys[1]]["params"] == {}
    said = [e["detail"] for e in api.events(job["id"]) if e["kind"] == "job.prompts_file"]
    assert said == [f"prompts file {made['key']}: 2 rows used, 1 matched no image (ghost.png)"]


def test_prompts_from_a_jsonl_file_over_a_folder(sysm: System) -> None:
    api = sysm.api
    keys = put_folder(sysm, "shoot/a/", 3)
    lines = [
        {"file": "photo-00000.png", "prompt": "first", "params": {"delay_s": 0.1}},
        {"key": keys[2], "prompt": "by key"},
    ]
    made = upload_prompts(api, "p.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n")
    r = api.post(
        "/api/v1/jobs", json={"provider": "echo", "inputs_prefix": "shoot/a/", "prompts_file": made["key"]}
    )
    assert r.status_code == 201, r.text
    done = api.wait(r.json()["id"], timeout=60)
    items = by_key(done)
    assert [items[k]["meta"]["prompt"] for k in keys] == ["first", None, "by key"]
    assert items[keys[0]]["params"] == {"delay_s": 0.1}


@pytest.mark.parametrize(
    ("name", "text", "words"),
    [
        ("p.csv", "prompt\nno name column\n", "no file column"),
        ("p.csv", "file,prompt\na.png,x\na.png,y\n", "appears twice"),
        ("p.jsonl", '{"file": "a.png"}\nnot json\n', "line 2 is not JSON"),
        ("p.csv", "file,prompt\n", "no rows"),
    ],
)
def test_a_bad_prompts_file_is_refused_naming_the_line(
    sysm: System, name: str, text: str, words: str
) -> None:
    r = sysm.api.s.post(
        sysm.api.url("/api/v1/prompt-files"), files={"file": (name, text.encode(), "text/csv")}, timeout=30
    )
    err = error_of(r)
    assert err["field"] == "file" and words in err["message"], err


def test_a_prompts_file_value_is_checked_like_the_job(sysm: System) -> None:
    api = sysm.api
    key = api.upload([png_bytes(16, 16, (4, 5, 6))], names=["x.png"])[0]
    made = upload_prompts(api, "p.csv", "file,delay_s\nx.png,-3\n")
    err = error_of(
        api.post("/api/v1/jobs", json={"provider": "echo", "inputs": [key], "prompts_file": made["key"]})
    )
    assert err["field"] == "inputs[0].params.delay_s", err
