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

    assert set(by_role) == {
        "mask_red_square",
        "layer_red_square",
        "mask_green_box",
        "layer_green_box",
        "instances",
        "preview",
    }
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
    # Each concept's layer: its instances' pixels in its legend colour, see-through elsewhere.
    assert [c["layer_role"] for c in report["concepts"]] == ["layer_red_square", "layer_green_box"]
    assert result.meta["legend"] == [
        {k: c[k] for k in ("concept", "instances", "colour", "role", "layer_role")}
        for c in report["concepts"]
    ]
    for concept in report["concepts"]:
        with Image.open(by_role[concept["layer_role"]].path) as layer:
            assert layer.mode == "RGBA" and layer.size == (80, 60)
            alpha = np.asarray(layer)[..., 3]
        assert np.array_equal(alpha > 0, masks[concept["role"]] > 0)
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


def test_concepts_of_one_job_match_a_single_concept_run(sam3_provider, make_run, input_image):
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


def test_each_concept_is_decoded_alone_and_written_before_the_next(
    sam3_provider, make_run, input_image, monkeypatch
):
    import numpy as np

    model = sam3_provider._model
    original = model.forward
    run = make_run()
    seen: list[tuple[int, int, list[str]]] = []

    def spying(*args, **kwargs):
        out = original(*args, **kwargs)
        # Concepts in this decoder call, concepts in its masks, files on disk when it was made.
        files = sorted(p.name for p in run.workdir.iterdir())
        seen.append((int(kwargs["input_ids"].shape[0]), int(out.pred_masks.shape[0]), files))
        return out

    monkeypatch.setattr(model, "forward", spying)
    # The same concept twice: the second one's file takes its index, as a job's outputs always did.
    concepts = ["red square", "green box", "red square"]
    spec = sam3_provider.validate(None, None, concepts, {"score_threshold": 0.0})
    result = sam3_provider.run(input_image, spec, run.ctx())

    # One concept's masks in memory at a time; the earlier concepts' masks are already on disk.
    assert seen == [
        (1, 1, []),
        (1, 1, ["layer_red_square.png", "mask_red_square.png"]),
        (1, 1, ["layer_green_box.png", "layer_red_square.png", "mask_green_box.png", "mask_red_square.png"]),
    ]
    by_role, report, masks = read_outputs(result)
    assert [o.role for o in result.outputs] == [
        "mask_red_square",
        "layer_red_square",
        "mask_green_box",
        "layer_green_box",
        "mask_red_square_2",
        "layer_red_square_2",
        "instances",
        "preview",
    ]
    assert [c["file"] for c in report["concepts"]] == [
        "mask_red_square.png",
        "mask_green_box.png",
        "mask_red_square_2.png",
    ]
    # The repeated concept gives the same masks both times.
    assert np.array_equal(masks["mask_red_square"], masks["mask_red_square_2"])
    assert sorted(p.name for p in run.workdir.iterdir()) == sorted(o.path.name for o in result.outputs)


def test_a_cancel_between_concepts_leaves_no_outputs_behind(sam3_provider, make_run, input_image):
    from providers.base import Cancelled

    run = make_run()
    on_disk: list[list[str]] = []

    def after_first_concept(run) -> bool:
        # Check 1 is at the start, 2 before the first concept, 3 before the second.
        if run.cancel_checks < 3:
            return False
        on_disk.append(sorted(p.name for p in run.workdir.iterdir()))
        return True

    run.cancel_when = after_first_concept
    spec = sam3_provider.validate(None, None, ["red square", "green box"], {"score_threshold": 0.0})
    with pytest.raises(Cancelled):
        sam3_provider.run(input_image, spec, run.ctx())
    # The first concept's mask and layer were written when cancelled.
    assert on_disk == [["layer_red_square.png", "mask_red_square.png"]]
    assert list(run.workdir.iterdir()) == []


def test_high_threshold_gives_empty_masks(sam3_provider, make_run, input_image):
    import numpy as np

    spec = sam3_provider.validate(None, None, ["nothing"], {"score_threshold": 1.0})
    result = sam3_provider.run(input_image, spec, make_run().ctx())
    _, report, masks = read_outputs(result)
    assert report["instances"] == []
    assert masks["mask_nothing"].shape == (60, 80) and not np.any(masks["mask_nothing"])
    # Nothing to show: no layer, and the legend says none were found.
    assert [o.role for o in result.outputs] == ["mask_nothing", "instances", "preview"]
    assert result.meta["legend"][0]["instances"] == 0 and result.meta["legend"][0]["layer_role"] is None


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


# ----- micro-batching (run_batch) ---------------------------------------------------------


def write_image(path, width: int, height: int, seed: int):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = (rng.random((height, width, 3)) * 255).astype("uint8")
    pixels[height // 4 : height // 2, width // 3 : width // 2] = (30 * seed % 255, 200, 90)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def three_images(tmp_path):
    """Three different images of different sizes (all are resized to the model's input)."""
    return [
        write_image(tmp_path / "a.png", 80, 60, 1),
        write_image(tmp_path / "b.png", 64, 64, 2),
        write_image(tmp_path / "c.png", 50, 90, 3),
    ]


def entries_for(provider, make_run, paths, concept_lists, params_list):
    from providers.base import BatchEntry

    runs = [make_run(item_id=f"item-{i}") for i in range(len(paths))]
    entries = [
        BatchEntry(path, provider.validate(None, None, concepts, params), run.ctx())
        for path, concepts, params, run in zip(paths, concept_lists, params_list, runs, strict=True)
    ]
    return runs, entries


def count_vision_calls(provider, monkeypatch) -> list[int]:
    """Batch sizes of the model's vision-encoder calls (a spy on the transformers model)."""
    model = provider._model
    sizes: list[int] = []
    original = model.get_vision_features

    def counting(*args, **kwargs):
        sizes.append(int(kwargs["pixel_values"].shape[0]))
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "get_vision_features", counting)
    return sizes


def test_a_batch_gives_what_each_image_gives_alone(sam3_provider, make_run, three_images, monkeypatch):
    import numpy as np

    from providers.base import RunResult

    concept_lists = [["red square"], ["dog", "ball"], ["tree", "sky", "car"]]
    # The tiny model's mask probabilities sit within 1e-3 of 0.5: these cut-offs give image-dependent
    # masks, and the second entry's own cut-off differs from the others'.
    params_list = [
        {"score_threshold": 0.0},
        {"score_threshold": 0.0, "mask_threshold": 0.5001},
        {"score_threshold": 0.0},
    ]
    alone = [
        sam3_provider.run(path, sam3_provider.validate(None, None, concepts, params), make_run().ctx())
        for path, concepts, params in zip(three_images, concept_lists, params_list, strict=True)
    ]
    sizes = count_vision_calls(sam3_provider, monkeypatch)
    runs, entries = entries_for(sam3_provider, make_run, three_images, concept_lists, params_list)
    batched = sam3_provider.run_batch(entries)

    assert sizes == [3]  # one vision-encoder pass for the three images
    assert all(isinstance(r, RunResult) for r in batched), batched
    assert [r.meta["instances"] for r in batched] == [8, 16, 24]
    for single, together, run in zip(alone, batched, runs, strict=True):
        assert together.meta["batch_size"] == 3 and single.meta["batch_size"] == 1
        assert all(o.path.parent == run.workdir for o in together.outputs)
        assert run.progress[-1] == (1.0, "done")
        _, report_single, masks_single = read_outputs(single)
        _, report_together, masks_together = read_outputs(together)
        assert report_together["batch_size"] == 3
        assert report_together["concepts"] == report_single["concepts"]
        assert masks_together.keys() == masks_single.keys()
        for role, mask in masks_single.items():
            assert 0 < np.count_nonzero(mask) < mask.size, role  # neither empty nor full: a real check
            assert np.array_equal(masks_together[role], mask), role
        pairs = zip(report_single["instances"], report_together["instances"], strict=True)
        for one, other in pairs:
            assert (one["concept"], one["label"], one["area"]) == (
                other["concept"],
                other["label"],
                other["area"],
            )
            assert other["box"] == pytest.approx(one["box"], abs=1e-3)
            assert other["score"] == pytest.approx(one["score"], abs=1e-4)


def test_each_entry_keeps_its_own_thresholds(sam3_provider, make_run, input_image):
    paths = [input_image] * 3
    params_list = [{"score_threshold": 0.0}, {"score_threshold": 1.0}, {"score_threshold": 0.0}]
    _, entries = entries_for(sam3_provider, make_run, paths, [["a"], ["a"], ["a", "b"]], params_list)
    assert [r.meta["instances"] for r in sam3_provider.run_batch(entries)] == [8, 0, 16]


def test_a_corrupt_image_fails_only_its_own_entry(
    sam3_provider, make_run, three_images, tmp_path, monkeypatch
):
    from providers.base import FatalError, RunResult

    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    paths = [three_images[0], corrupt, three_images[2]]
    sizes = count_vision_calls(sam3_provider, monkeypatch)
    runs, entries = entries_for(
        sam3_provider, make_run, paths, [["a"], ["b"], ["c"]], [{"score_threshold": 0.0}] * 3
    )
    first, middle, last = sam3_provider.run_batch(entries)

    assert isinstance(middle, FatalError) and middle.code == "bad_input" and not middle.retryable
    assert isinstance(first, RunResult) and isinstance(last, RunResult)
    assert first.meta["instances"] == last.meta["instances"] == 8
    assert sizes == [2]  # the corrupt image never reached the model
    assert list(runs[1].workdir.iterdir()) == []


@pytest.mark.parametrize("cancel_at_check", [1, 2], ids=["before-encoding", "after-encoding"])
def test_a_cancelled_entry_returns_cancelled_and_the_others_finish(
    sam3_provider, make_run, three_images, cancel_at_check
):
    from providers.base import Cancelled, RunResult

    concept_lists = [["red square"], ["dog", "ball"], ["tree"]]
    runs, entries = entries_for(
        sam3_provider, make_run, three_images, concept_lists, [{"score_threshold": 0.0}] * 3
    )
    # Check 1 is at the start, check 2 between the shared vision pass and this image's concepts.
    runs[1].cancel_when = lambda run: run.cancel_checks >= cancel_at_check
    results = sam3_provider.run_batch(entries)

    assert isinstance(results[1], Cancelled)
    assert runs[1].cancel_checks == cancel_at_check
    assert list(runs[1].workdir.iterdir()) == []
    for index in (0, 2):
        assert isinstance(results[index], RunResult), results[index]
        assert results[index].meta["instances"] == 8 * len(concept_lists[index])
        assert runs[index].progress[-1] == (1.0, "done")


def test_running_out_of_gpu_memory_fails_the_whole_batch_as_retryable(
    sam3_provider, make_run, three_images, tmp_path, monkeypatch
):
    import torch

    from providers.base import FatalError, RetryableError

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    # The transformers model's vision encoder runs out of memory (there is no GPU here to fill).
    monkeypatch.setattr(sam3_provider._model, "get_vision_features", out_of_memory)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not an image")
    paths = [three_images[0], corrupt, three_images[2]]
    runs, entries = entries_for(sam3_provider, make_run, paths, [["a"], ["b"], ["c"]], [{}] * 3)
    first, middle, last = sam3_provider.run_batch(entries)

    for result in (first, last):
        assert isinstance(result, RetryableError) and result.code == "oom" and result.retryable
    assert isinstance(middle, FatalError)  # a bad input stays a bad input
    with pytest.raises(RetryableError) as caught:
        sam3_provider.run(three_images[0], entries[0].spec, make_run().ctx())
    assert caught.value.code == "oom"
