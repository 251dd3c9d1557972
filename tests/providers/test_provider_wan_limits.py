"""Every size the WAN schema offers runs; sizes a model cannot run are refused at submission.

The demo model runs through the provider at every resolution preset and at the fewest and
most frames the schema allows. A checkpoint whose config allows less (a smaller rotary
table) gets a schema derived from that config, and a 400 naming the field.
"""

from __future__ import annotations

import json
import shutil

import pytest

from providers.base import FatalError, JobSpec, ParamError
from providers.wan import RESOLUTIONS, WanLimits, WanProvider, grid_size
from tests.providers.test_provider_wan import count_frames

pytestmark = pytest.mark.models

# What the demo provider offers, read from its schema (cheap: no torch).
SCHEMA = {p.name: p for p in WanProvider().params("wan_i2v")}
PRESETS = SCHEMA["resolution"].choices
FEWEST, MOST = int(SCHEMA["num_frames"].minimum), int(SCHEMA["num_frames"].maximum)
# A rotary table of 8 rows: 29 frames (8 latent frames) and 128-pixel sides (8 patches of 16).
SMALL_ROPE = 8


def field_of(call) -> str:
    with pytest.raises(ParamError) as err:
        call()
    return err.value.field


def test_the_demo_schema_offers_every_preset_and_frame_count():
    assert PRESETS == ["demo", "480p", "720p"]
    assert (FEWEST, MOST) == (5, 161)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_runs_at_the_fewest_frames(preset, wan_provider, make_run, input_image):
    spec = wan_provider.validate(
        None, "size check", None, {"resolution": preset, "num_frames": FEWEST, "steps": 1}
    )
    result = wan_provider.run(input_image, spec, make_run().ctx())
    width, height = grid_size(80, 60, RESOLUTIONS[preset], 16)
    assert (result.meta["width"], result.meta["height"]) == (width, height)
    assert count_frames(result.outputs[0].path) == (FEWEST, (width, height))


def test_the_most_frames_run(wan_provider, make_run, input_image):
    spec = wan_provider.validate(
        None, "length check", None, {"resolution": "demo", "num_frames": MOST, "steps": 1}
    )
    result = wan_provider.run(input_image, spec, make_run().ctx())
    assert result.meta["num_frames"] == MOST
    assert count_frames(result.outputs[0].path)[0] == MOST


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_at_the_most_frames_fits_the_demo_transformer(preset, demo_model_root):
    """The full latent grid of each preset at the most frames, through the loaded transformer's own
    rotary embedding (the step that failed); the whole run at 720p x 161 frames takes minutes on CPU."""
    import torch
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    from providers.demo_models import ensure_demo_wan

    source = ensure_demo_wan(demo_model_root)
    transformer = WanTransformer3DModel.from_pretrained(source, subfolder="transformer")
    vae = AutoencoderKLWan.load_config(source, subfolder="vae")
    scale_t, scale_s = vae["scale_factor_temporal"], vae["scale_factor_spatial"]
    for image_w, image_h in ((80, 60), (60, 80)):
        width, height = grid_size(image_w, image_h, RESOLUTIONS[preset], 16)
        grid = (1, 16, (MOST - 1) // scale_t + 1, height // scale_s, width // scale_s)
        cos, _ = transformer.rope(torch.zeros(()).expand(grid))
        assert cos.shape[1] == grid[2] * (grid[3] // 2) * (grid[4] // 2)
    limits = WanLimits.from_config(dict(transformer.config), vae)
    assert limits.max_frames == MOST and preset in limits.presets()


def test_an_extreme_aspect_ratio_is_cropped_within_the_rotary_table(wan_provider, make_run, tmp_path):
    """A 4000x2 banner at 720p would want a 32000-pixel-wide video (2000 patches; the table has 1024)."""
    from PIL import Image

    banner = tmp_path / "banner.png"
    Image.new("RGB", (4000, 2), (200, 30, 30)).save(banner)
    spec = wan_provider.validate(
        None, "banner", None, {"resolution": "720p", "num_frames": FEWEST, "steps": 1}
    )
    result = wan_provider.run(banner, spec, make_run().ctx())
    side = wan_provider.limits().max_side
    assert result.meta["width"] == side == 1024 * 16
    assert count_frames(result.outputs[0].path)[0] == FEWEST


def test_impossible_sizes_are_refused_naming_the_field():
    wan = WanProvider()
    assert field_of(lambda: wan.validate(None, "p", None, {"num_frames": MOST + 4})) == "params.num_frames"
    assert field_of(lambda: wan.validate(None, "p", None, {"num_frames": 1})) == "params.num_frames"
    assert field_of(lambda: wan.validate(None, "p", None, {"resolution": "1080p"})) == "params.resolution"
    bypass = JobSpec(model="wan_i2v", prompt="p", prompts=[], params={"num_frames": MOST + 4})
    assert field_of(lambda: wan.check(bypass)) == "params.num_frames"


@pytest.fixture(scope="module")
def small_rope_model(demo_model_root: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The demo checkpoint with an 8-row rotary table: a real model that runs less than the schema's maxima."""
    from providers.demo_models import MARKER, ensure_demo_wan

    target = tmp_path_factory.mktemp("small-rope") / "wan"
    shutil.copytree(ensure_demo_wan(demo_model_root), target)
    (target / MARKER).unlink()
    config_path = target / "transformer" / "config.json"
    config = json.loads(config_path.read_text())
    config["rope_max_seq_len"] = SMALL_ROPE
    config_path.write_text(json.dumps(config))
    return str(target)


def test_a_smaller_model_gets_a_schema_from_its_config(small_rope_model):
    wan = WanProvider(small_rope_model)
    schema = {p.name: p for p in wan.params("wan_i2v")}
    assert schema["num_frames"].maximum == 29 and schema["num_frames"].default == 29
    assert schema["resolution"].choices == ["demo"] and schema["resolution"].default == "demo"
    assert field_of(lambda: wan.validate(None, "p", None, {"num_frames": 33})) == "params.num_frames"
    assert field_of(lambda: wan.validate(None, "p", None, {"resolution": "480p"})) == "params.resolution"
    assert wan.validate(None, "p", None, {"num_frames": 29}).params["resolution"] == "demo"


def test_a_smaller_model_runs_its_largest_sizes_and_refuses_larger(
    small_rope_model, make_run, tmp_path, input_image
):
    from PIL import Image

    wan = WanProvider(small_rope_model)
    wan.load("cpu")
    assert wan.limits() == WanLimits(max_frames=29, max_side=128)
    longest = wan.validate(None, "p", None, {"num_frames": 29, "steps": 1})
    assert count_frames(wan.run(input_image, longest, make_run().ctx()).outputs[0].path)[0] == 29

    # 1000x4 in the 64x64 budget would be a 256x16 canvas: 16 patches wide, past the 8 rows.
    banner = tmp_path / "banner.png"
    Image.new("RGB", (1000, 4), (20, 200, 30)).save(banner)
    wide = wan.run(banner, wan.validate(None, "p", None, {"num_frames": 5, "steps": 1}), make_run().ctx())
    assert (wide.meta["width"], wide.meta["height"]) == (128, 16)

    # A spec that skipped submission checks is a fatal, named error before any tensor work.
    too_long = JobSpec(model="wan_i2v", prompt="p", prompts=[], params={"num_frames": 33, "steps": 1})
    run = make_run()
    with pytest.raises(FatalError) as err:
        wan.run(input_image, too_long, run.ctx())
    assert err.value.code == "bad_params" and "params.num_frames" in str(err.value)
    assert not [m for m in run.messages() if m.startswith("step")]


def test_the_api_refuses_what_the_configured_model_cannot_run(systems, small_rope_model):
    """Through POST /api/v1/jobs on a web host configured with the smaller model (no workers needed)."""
    from tests.support import png_bytes

    before = len(systems.started)
    system = systems.start("wan-small-rope", workers=(), env={"WAN_MODEL": small_rope_model})
    try:
        described = system.api.get("/api/v1/providers").json()["providers"]
        wan = next(p for p in described if p["name"] == "wan_local")
        schema = {p["name"]: p for p in wan["models"][0]["params"]}
        assert schema["num_frames"]["maximum"] == 29 and schema["resolution"]["choices"] == ["demo"]
        key = system.api.upload([png_bytes(20, 20, (5, 5, 5))])[0]
        for params, field in (
            ({"num_frames": 33}, "params.num_frames"),
            ({"resolution": "720p"}, "params.resolution"),
        ):
            r = system.api.post(
                "/api/v1/jobs", json={"provider": "wan_local", "inputs": [key], "params": params}
            )
            assert r.status_code == 400, r.text
            assert r.json()["error"]["field"] == field
    finally:
        systems.stop_since(before)
