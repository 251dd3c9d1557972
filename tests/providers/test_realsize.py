"""The real-size tier (`make test-realsize`): SAM3 at its published configuration and Wan 2.2 TI2V-5B
at its published widths, random weights, through the providers on CPU.

SAM3 is the whole published model (840 M parameters). WAN keeps 2 of TI2V-5B's 30 transformer
blocks (every tensor at its real width: 417 M parameters) and the whole Wan 2.2 VAE (705 M); the
text encoder is UMT5 at the width the transformer reads with one small layer, since the text
encoder is not what this tier checks. The video is 480p (the real output size) with the fewest
frames the provider accepts (5) and one step: the VAE decode at 480p costs about 43 s per output
frame on two cores, so 81 frames would take about an hour.

The models are built once into var/realsize (REALSIZE_MODEL_DIR moves it; 6.7 GB) and reused by
later runs. Deselected from the default `make test` (`-m "not realsize"`): the tier takes about 6
minutes on an idle 2-core machine and 16 GB of memory at its peak, the VAE decode
(docs/benchmarks.md, "Real-size models on CPU").
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.providers.test_provider_wan import count_frames

pytestmark = [pytest.mark.realsize, pytest.mark.timeout(3600)]

ROOT = Path(__file__).resolve().parents[2]
# TI2V-5B's 480p budget, and an input of that shape.
WAN_SIZE = (832, 480)
WAN_LAYERS = 2
# SAM3's DETR decoder has 200 queries: a score threshold of 0 keeps every one.
SAM3_QUERIES = 200


@pytest.fixture(scope="module")
def realsize_root() -> str:
    return os.environ.get("REALSIZE_MODEL_DIR") or str(ROOT / "var" / "realsize")


# Per test, not per module: SAM3 is freed before WAN loads, which keeps the peak memory to one model.
@pytest.fixture
def sam3_realsize(realsize_root: str):
    from providers.demo_models import built_facts, ensure_realsize_sam3
    from providers.sam3 import Sam3Provider

    path = ensure_realsize_sam3(realsize_root)
    # The published size, not a cut-down one: what the tier is for.
    assert built_facts(path)["params"]["model"] > 800_000_000
    provider = Sam3Provider(path)
    provider.load("cpu")
    return provider


@pytest.fixture
def wan_realsize(realsize_root: str):
    from providers.demo_models import built_facts, ensure_realsize_wan
    from providers.wan import WanProvider

    path = ensure_realsize_wan(realsize_root, "ti2v", num_layers=WAN_LAYERS)
    params = built_facts(path)["params"]
    assert params["transformer"] > 400_000_000 and params["vae"] > 700_000_000
    provider = WanProvider(path)
    provider.load("cpu")
    return provider


def photo(path: Path, width: int, height: int, seed: int) -> Path:
    """An RGB image with structure (bands and blocks), so resizing and masks have edges to work on."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = (rng.random((height, width, 3)) * 60).astype("uint8")
    pixels[height // 6 : height // 2, width // 5 : width // 2] = (210, 40, 40)
    pixels[height // 2 :, width // 2 :] = (40, 190, 70)
    Image.fromarray(pixels).save(path)
    return path


def check_sam3_outputs(result, concepts: list[str], size: tuple[int, int]) -> None:
    """Per concept an input-sized label mask whose labels are the JSON's instances, each with a box in
    the input's pixels; a preview of the input's size."""
    import numpy as np
    from PIL import Image

    width, height = size
    by_role = {o.role: o for o in result.outputs}
    report = json.loads(by_role["instances"].path.read_text())
    assert report["image"] == {"width": width, "height": height}
    assert [c["concept"] for c in report["concepts"]] == concepts
    for concept in report["concepts"]:
        with Image.open(by_role[concept["role"]].path) as img:
            mask = np.asarray(img)
        assert mask.shape == (height, width)
        mine = [i for i in report["instances"] if i["mask_role"] == concept["role"]]
        assert [i["label"] for i in mine] == list(range(1, SAM3_QUERIES + 1))
        assert set(np.unique(mask).tolist()) - {0} <= {i["label"] for i in mine}
        for inst in mine:
            x1, y1, x2, y2 = inst["box"]
            # Boxes come scaled to the input (not the model's 1008 px square): centre inside it,
            # no side longer than it.
            assert x1 <= x2 and y1 <= y2
            assert 0 <= (x1 + x2) / 2 <= width and 0 <= (y1 + y2) / 2 <= height
            assert x2 - x1 <= width and y2 - y1 <= height
            assert inst["area"] == int((mask == inst["label"]).sum())
    with Image.open(by_role["preview"].path) as preview:
        assert preview.size == (width, height)


def test_sam3_real_config_segments_a_batch_of_photo_sized_images(sam3_realsize, make_run, tmp_path):
    """One vision pass for two images (the worker's micro-batch path; a single item takes the same
    path), each with its own concepts, size and outputs."""
    from providers.base import BatchEntry

    asked = [
        (
            photo(tmp_path / "landscape.png", 1200, 900, seed=1),
            ["person", "red car", "green field"],
            (1200, 900),
        ),
        (photo(tmp_path / "portrait.png", 480, 640, seed=2), ["tree"], (480, 640)),
    ]
    runs = [make_run() for _ in asked]
    entries = [
        BatchEntry(path, sam3_realsize.validate(None, None, concepts, {"score_threshold": 0.0}), run.ctx())
        for (path, concepts, _), run in zip(asked, runs, strict=True)
    ]
    results = sam3_realsize.run_batch(entries)
    for result, run, (_, concepts, size) in zip(results, runs, asked, strict=True):
        assert not isinstance(result, BaseException), result
        assert result.meta["batch_size"] == 2
        assert result.meta["instances"] == SAM3_QUERIES * len(concepts)
        check_sam3_outputs(result, concepts, size)
        assert run.progress[-1] == (1.0, "done")


def test_wan_ti2v_real_width_renders_a_480p_video(wan_realsize, make_run, tmp_path):
    import time

    from PIL import Image

    image = photo(tmp_path / "frame.png", *WAN_SIZE, seed=4)
    # When each phase ends, printed for whoever runs the tier (pytest -rP): where the time goes.
    stamps: list[tuple[float, str | None]] = []
    run = make_run(on_progress=lambda _run, _fraction, message: stamps.append((time.monotonic(), message)))
    spec = wan_realsize.validate(
        None,
        "a red block slides over a field",
        None,
        {"resolution": "480p", "num_frames": 5, "steps": 1, "seed": 3},
    )
    result = wan_realsize.run(image, spec, run.ctx())
    print(
        "phases:",
        ", ".join(f"{m} at {t - stamps[0][0]:.0f} s" for t, m in stamps[1:]),
        "(from the first report)",
    )
    roles = {o.role: o for o in result.outputs}
    assert roles["video"].content_type == "video/mp4"
    width, height = result.meta["width"], result.meta["height"]
    assert count_frames(roles["video"].path) == (5, (width, height))
    with Image.open(roles["poster"].path) as poster:
        assert poster.size == (width, height)
    assert result.meta["layout"] == "ti2v" and result.meta["num_frames"] == 5
    # TI2V-5B's grid: 16x VAE compression x 2x2 patches. Within the 480p budget, most of it used,
    # the input's aspect ratio to within a grid step.
    assert width % 32 == 0 and height % 32 == 0
    assert 0.8 * WAN_SIZE[0] * WAN_SIZE[1] <= width * height <= WAN_SIZE[0] * WAN_SIZE[1]
    assert abs(width / height - WAN_SIZE[0] / WAN_SIZE[1]) <= 32 / height
    assert [m for m in run.messages() if m.startswith("step")] == ["step 1/1"]
