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


def photo(width: int, height: int, path: Path) -> Path:
    """A photo-like input with no black anywhere: a colour gradient."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([60 + 150 * x / width, 60 + 150 * y / height, 120 + 0 * x], axis=-1)
    Image.fromarray(pixels.astype("uint8")).save(path)
    return path


@pytest.mark.parametrize("size", [(1280, 720), (720, 1280)])
def test_a_photo_fills_the_frame_without_black_bars(size, wan_provider, make_run, tmp_path):
    import imageio.v2 as imageio
    import numpy as np

    from providers.wan import RESOLUTIONS, grid_size, prepare_image

    width, height = size
    source = photo(width, height, tmp_path / "photo.png")
    # The conditioning frame at the real presets: the photo cropped to the grid, never padded.
    from PIL import Image

    for preset, multiple in (("480p", 16), ("720p", 16), ("720p", 32)):
        with Image.open(source) as image:
            frame, crop = prepare_image(image, RESOLUTIONS[preset], multiple)
        pixels = np.asarray(frame)
        edges = [pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]]
        assert all(edge.max() > 0 for edge in edges), (preset, multiple)
        assert abs(frame.width - frame.height * width / height) <= multiple
        assert crop[0] >= 0 and crop[1] >= 0 and crop[2] <= width and crop[3] <= height

    spec = wan_provider.validate(None, "fills the frame", None, {"num_frames": 5, "steps": 1})
    result = wan_provider.run(source, spec, make_run().ctx())
    expected = grid_size(width, height, RESOLUTIONS["demo"], 16)
    assert (result.meta["width"], result.meta["height"]) == expected
    assert abs(expected[0] - expected[1] * width / height) <= 16
    reader = imageio.get_reader(str(result.outputs[0].path), format="FFMPEG")
    try:
        for video_frame in reader:
            assert video_frame.shape[:2] == (expected[1], expected[0])
            for edge in (video_frame[0], video_frame[-1], video_frame[:, 0], video_frame[:, -1]):
                assert edge.max() > 0
    finally:
        reader.close()


def test_savers_follow_free_memory_unless_configured():
    from providers.wan import GIB, MemorySavers, choose_savers

    # 5B TI2V in bf16 (~24 GiB with the text encoder) on an empty 80 GiB GPU: nothing needed.
    assert choose_savers(78 * GIB, 24 * GIB, 11 * GIB) == MemorySavers(False, False)
    # A14B: two 14B experts + text encoder (~64 GiB) on the same GPU: offload, then room to decode.
    assert choose_savers(78 * GIB, 64 * GIB, 27 * GIB) == MemorySavers(True, False)
    # A 24 GiB card: offload and tiling.
    assert choose_savers(23 * GIB, 24 * GIB, 11 * GIB) == MemorySavers(True, True)
    # Configured values win; on a CPU there is nothing to offload to.
    assert choose_savers(78 * GIB, 64 * GIB, 27 * GIB, cpu_offload=False) == MemorySavers(False, True)
    assert choose_savers(None, 64 * GIB, 27 * GIB, cpu_offload=True) == MemorySavers(False, False)


def test_the_out_of_memory_ladder_is_offload_then_tiling_then_a_lower_resolution():
    from providers.wan import MemorySavers, next_saver

    presets = ["demo", "480p", "720p"]
    none = MemorySavers()
    assert next_saver(none, "720p", presets, accelerator=True) == ("cpu_offload", MemorySavers(True), "720p")
    assert next_saver(MemorySavers(True), "720p", presets, True) == (
        "vae_tiling",
        MemorySavers(True, True),
        "720p",
    )
    both = MemorySavers(True, True)
    assert next_saver(both, "720p", presets, True) == ("resolution 480p", both, "480p")
    assert next_saver(both, "demo", presets, True) is None
    # Without an accelerator offloading is skipped.
    assert next_saver(none, "480p", presets, accelerator=False)[0] == "vae_tiling"


def test_an_out_of_memory_item_is_retried_once_with_the_next_saver(demo_model_root, make_run, input_image):
    import torch

    from providers.base import RetryableError
    from providers.wan import WanProvider

    provider = WanProvider(demo_model_dir=demo_model_root)
    provider.load("cpu")
    vae = provider._pipe.vae
    decode = vae.decode
    failures = {"left": 1}

    def decode_out_of_memory(*args, **kwargs):
        # What CUDA raises when the decode does not fit (this machine has no GPU to fill).
        if failures["left"]:
            failures["left"] -= 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return decode(*args, **kwargs)

    vae.decode = decode_out_of_memory
    spec = provider.validate(None, "tight", None, {"num_frames": 5, "steps": 1})
    result = provider.run(input_image, spec, make_run().ctx())
    assert result.meta["oom_retry"]["then"] == "vae_tiling"
    assert result.meta["memory_savers"] == ["vae_tiling"] and vae.use_tiling
    assert count_frames(result.outputs[0].path)[0] == 5

    # Only once per item: a second out-of-memory in the same item fails it as retryable.
    failures["left"] = 2
    with pytest.raises(RetryableError) as err:
        provider.run(input_image, spec, make_run().ctx())
    assert err.value.code == "oom"
