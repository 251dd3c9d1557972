"""WAN image-to-video with the tiny demo pipeline (real diffusers code path, CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from providers.base import Cancelled

pytestmark = pytest.mark.models


def count_frames(path: Path) -> tuple[int, tuple[int, int]]:
    import imageio.v2 as imageio

    reader = imageio.get_reader(str(path), format="FFMPEG")
    try:
        size = tuple(reader.get_meta_data()["size"])
        return sum(1 for _ in reader), size
    finally:
        reader.close()


def test_video_has_the_requested_frames_and_a_poster(wan_provider, make_run, input_image):
    from PIL import Image

    run = make_run()
    spec = wan_provider.validate(None, "a red square drifts", None, {"num_frames": 13, "seed": 7})
    result = wan_provider.run(input_image, spec, run.ctx())

    roles = {o.role: o for o in result.outputs}
    assert set(roles) == {"video", "poster"}
    assert roles["video"].content_type == "video/mp4"
    frames, size = count_frames(roles["video"].path)
    assert frames == 13
    # 80x60 input in the 64x64 "demo" budget, multiples of 16: 64x48, aspect kept.
    assert size == (64, 48) == (result.meta["width"], result.meta["height"])
    with Image.open(roles["poster"].path) as poster:
        assert poster.size == (64, 48)
    assert result.meta["seed"] == 7 and result.meta["num_frames"] == 13
    assert result.meta["loads"] == 1
    steps = [m for m in run.messages() if m.startswith("step")]
    assert steps == ["step 1/2", "step 2/2"]
    fractions = [f for f, _ in run.progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert not list(run.workdir.glob("*.partial*"))


def test_cancel_in_the_first_step_stops_the_run(wan_provider, make_run, input_image):
    def cancel_after_first_step(run, fraction, message):
        if message and message.startswith("step 1/"):
            run.cancelled = True

    run = make_run(on_progress=cancel_after_first_step)
    spec = wan_provider.validate(None, "never finished", None, {"steps": 4})
    with pytest.raises(Cancelled):
        wan_provider.run(input_image, spec, run.ctx())
    assert [m for m in run.messages() if m.startswith("step")] == ["step 1/4"]
    assert list(run.workdir.iterdir()) == []

    # The pipeline is still usable afterwards.
    after = make_run()
    result = wan_provider.run(
        input_image, wan_provider.validate(None, "ok", None, {"num_frames": 5}), after.ctx()
    )
    assert count_frames(result.outputs[0].path)[0] == 5


def test_model_loads_once_per_process(demo_model_root, make_run, input_image):
    import providers.wan as wan
    from providers.demo_models import MARKER, ensure_demo_wan

    marker = Path(ensure_demo_wan(demo_model_root)) / MARKER
    built = marker.stat().st_mtime_ns
    provider = wan.WanProvider(demo_model_dir=demo_model_root)
    before = wan.LOAD_COUNT
    provider.load("cpu")
    metas = []
    for n in range(2):
        spec = provider.validate(None, f"run {n}", None, {"num_frames": 5, "steps": 1})
        metas.append(provider.run(input_image, spec, make_run().ctx()).meta)
    provider.load("cpu")
    loaded = wan.LOAD_COUNT
    assert loaded == before + 1
    assert [m["loads"] for m in metas] == [1, 1]
    assert marker.stat().st_mtime_ns == built  # the demo model was not rebuilt


@pytest.mark.parametrize("layout", ["wan2.2", "ti2v"])
def test_wan22_layouts_are_detected_and_run(layout, demo_model_root, make_run, input_image):
    from providers.wan import WanProvider

    provider = WanProvider(demo_model_dir=demo_model_root, demo_layout=layout)
    spec = provider.validate(None, "layout check", None, {"num_frames": 5, "steps": 1})
    result = provider.run(input_image, spec, make_run().ctx())
    multiple = 32 if layout == "ti2v" else 16
    assert result.meta["layout"] == layout
    assert result.meta["width"] % multiple == 0 and result.meta["height"] % multiple == 0
    frames, size = count_frames(result.outputs[0].path)
    assert frames == 5 and size == (result.meta["width"], result.meta["height"])
