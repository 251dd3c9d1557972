"""SAM3 with the tiny demo model (real transformers Sam3Model, CPU, no torchvision)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.models


def read_outputs(result):
    import numpy as np
    from PIL import Image

    by_role = {o.role: o for o in result.outputs}
    report = json.loads(by_role["instances"].path.read_text())
    masks = {}
    for concept in report["concepts"]:
        with Image.open(by_role[concept["role"]].path) as img:
            masks[concept["role"]] = np.asarray(img)
    return by_role, report, masks


def test_two_concepts_give_input_sized_masks_that_match_the_json(sam3_provider, make_run, input_image):
    import numpy as np
    from PIL import Image

    run = make_run()
    spec = sam3_provider.validate(None, None, ["red square", "green box"], {"score_threshold": 0.0})
    result = sam3_provider.run(input_image, spec, run.ctx())
    by_role, report, masks = read_outputs(result)

    assert set(by_role) == {"mask_red_square", "mask_green_box", "instances", "preview"}
    assert report["image"] == {"width": 80, "height": 60}
    assert report["inference_ms"] > 0
    assert [c["concept"] for c in report["concepts"]] == ["red square", "green box"]
    for concept in report["concepts"]:
        mask = masks[concept["role"]]
        assert mask.shape == (60, 80)  # (rows, columns) of the 80x60 input
        mine = [i for i in report["instances"] if i["mask_role"] == concept["role"]]
        assert all(i["concept"] == concept["concept"] for i in mine)
        labels = [i["label"] for i in mine]
        # threshold 0 keeps every query of the tiny model (8), labelled 1..n by descending score
        assert labels == list(range(1, concept["instances"] + 1)) and concept["instances"] == 8
        scores = [i["score"] for i in mine]
        assert scores == sorted(scores, reverse=True)
        for inst in mine:
            assert len(inst["box"]) == 4
            assert inst["area"] == int((mask == inst["label"]).sum())
        # every non-background pixel value is an instance of this concept
        assert set(np.unique(mask).tolist()) - {0} <= set(labels)
    with Image.open(by_role["preview"].path) as preview:
        assert preview.size == (80, 60)
    assert run.progress[-1] == (1.0, "done")


def test_vision_features_are_computed_once_per_image(sam3_provider, make_run, input_image, monkeypatch):
    model = sam3_provider._model
    calls = []
    original = model.get_vision_features

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "get_vision_features", counting)
    spec = sam3_provider.validate(None, None, ["a", "b", "c"], {"score_threshold": 0.0})
    sam3_provider.run(input_image, spec, make_run().ctx())
    assert len(calls) == 1


def test_batched_concepts_match_a_single_concept_run(sam3_provider, make_run, input_image):
    import numpy as np

    both = sam3_provider.run(
        input_image,
        sam3_provider.validate(None, None, ["red square", "green box"], {"score_threshold": 0.0}),
        make_run().ctx(),
    )
    alone = sam3_provider.run(
        input_image,
        sam3_provider.validate(None, None, ["green box"], {"score_threshold": 0.0}),
        make_run().ctx(),
    )
    _, report_both, masks_both = read_outputs(both)
    _, report_alone, masks_alone = read_outputs(alone)
    assert np.array_equal(masks_both["mask_green_box"], masks_alone["mask_green_box"])
    scores_both = [i["score"] for i in report_both["instances"] if i["concept"] == "green box"]
    scores_alone = [i["score"] for i in report_alone["instances"]]
    assert scores_both == pytest.approx(scores_alone, abs=1e-4)


def test_high_threshold_gives_empty_masks(sam3_provider, make_run, input_image):
    import numpy as np

    spec = sam3_provider.validate(None, None, ["nothing"], {"score_threshold": 1.0})
    result = sam3_provider.run(input_image, spec, make_run().ctx())
    _, report, masks = read_outputs(result)
    assert report["instances"] == []
    assert masks["mask_nothing"].shape == (60, 80) and not np.any(masks["mask_nothing"])


def test_long_concepts_are_truncated_to_the_text_length(sam3_provider, make_run, input_image):
    spec = sam3_provider.validate(None, None, ["a very long description " * 8], {"score_threshold": 0.0})
    result = sam3_provider.run(input_image, spec, make_run().ctx())
    assert result.meta["instances"] == 8


def test_model_loads_once_per_process(demo_model_root, make_run, input_image):
    import providers.sam3 as sam3

    provider = sam3.Sam3Provider(demo_model_dir=demo_model_root)
    before = sam3.LOAD_COUNT
    provider.load("cpu")
    metas = [
        provider.run(input_image, provider.validate(None, None, ["x"], {}), make_run().ctx()).meta
        for _ in range(2)
    ]
    provider.load("cpu")
    loaded = sam3.LOAD_COUNT
    assert loaded == before + 1
    assert [m["loads"] for m in metas] == [1, 1]
