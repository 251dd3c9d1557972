"""Submission-time validation and description: cheap, no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from providers import ParamError, ProviderSettings, build_registry
from providers.base import JobSpec
from providers.runway import MODELS, RunwayProvider
from providers.sam3 import Sam3Provider
from providers.wan import PRESET_SIZES as RESOLUTION_SIZES
from providers.wan import RESOLUTIONS, WanProvider, detect_layout, grid_size

ROOT = Path(__file__).resolve().parents[2]


def field_of(call) -> str:
    with pytest.raises(ParamError) as err:
        call()
    return err.value.field


def test_wan_num_frames_must_be_4k_plus_1():
    wan = WanProvider()
    assert field_of(lambda: wan.validate(None, "p", None, {"num_frames": 10})) == "params.num_frames"
    assert wan.validate(None, "p", None, {"num_frames": 17}).params["num_frames"] == 17
    # check() also guards specs that did not come through validate()
    spec = JobSpec(model="wan_i2v", prompt="p", prompts=[], params={"num_frames": 8})
    assert field_of(lambda: wan.check(spec)) == "params.num_frames"


def test_wan_rejects_unknown_resolution_and_params():
    wan = WanProvider()
    assert field_of(lambda: wan.validate(None, "p", None, {"resolution": "4k"})) == "params.resolution"
    assert field_of(lambda: wan.validate(None, "p", None, {"strength": 1})) == "params.strength"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize(
    ("provider", "name"),
    [(WanProvider(), "guidance_scale"), (WanProvider(), "num_frames"), (Sam3Provider(), "score_threshold")],
    ids=["wan-float", "wan-int", "sam3-float"],
)
def test_non_finite_numbers_are_refused_naming_the_field(provider, name, value):
    # The admin form turns "nan" into float("nan"), which every range comparison lets through.
    call = lambda: provider.validate(None, "p", ["cat"], {name: value})  # noqa: E731
    assert field_of(call) == f"params.{name}"


def test_runway_ratio_and_duration_per_model():
    rw = RunwayProvider()
    assert field_of(lambda: rw.validate("gen4_turbo", "p", None, {"ratio": "1920:1080"})) == "params.ratio"
    assert field_of(lambda: rw.validate("veo3.1", "p", None, {"ratio": "960:960"})) == "params.ratio"
    assert field_of(lambda: rw.validate("veo3.1", "p", None, {"duration": 5})) == "params.duration"
    assert field_of(lambda: rw.validate("gen4_turbo", "p", None, {"duration": 7})) == "params.duration"
    ok = rw.validate("veo3.1", "p", None, {"ratio": "1080:1920", "duration": 6})
    assert ok.params == {"ratio": "1080:1920", "duration": 6, "audio": True}
    bypass = JobSpec(model="gen4_turbo", prompt="p", prompts=[], params={"ratio": "1080:1920", "duration": 5})
    assert field_of(lambda: rw.check(bypass)) == "params.ratio"
    assert field_of(lambda: rw.validate("gen4_turbo", "x" * 1001, None, {})) == "prompt"


def test_runway_models_carry_constraints_and_costs():
    rw = RunwayProvider()
    infos = {m.name: m for m in rw.models()}
    assert {"gen4_turbo", "veo3.1", "veo3.1_fast", "gen4.5"} <= set(infos)
    assert infos["gen4_turbo"].constraints["ratio"] == [
        "1280:720", "720:1280", "1104:832", "832:1104", "960:960", "1584:672",
    ]  # fmt: skip
    assert infos["gen4_turbo"].constraints["duration"] == [5, 10]
    assert infos["veo3.1"].constraints["ratio"] == ["1280:720", "720:1280", "1080:1920", "1920:1080"]
    assert infos["veo3.1"].constraints["duration"] == [4, 6, 8]
    for name, info in infos.items():
        assert info.cost_per_item_usd == pytest.approx(
            MODELS[name].credits_per_second * MODELS[name].default_duration * 0.01
        )


def test_sam3_needs_a_concept():
    sam = Sam3Provider()
    assert field_of(lambda: sam.validate(None, None, [], {})) == "prompts"
    assert field_of(lambda: sam.validate(None, None, ["  ", ""], {})) == "prompts"
    assert field_of(lambda: sam.check(JobSpec(model="sam3", prompt=None, prompts=[], params={}))) == "prompts"
    assert (
        field_of(lambda: sam.validate(None, None, ["cat"], {"score_threshold": 2}))
        == "params.score_threshold"
    )
    assert sam.validate(None, None, [" cat ", "dog"], {}).prompts == ["cat", "dog"]


@pytest.mark.parametrize("provider", [WanProvider(), Sam3Provider(), RunwayProvider()], ids=lambda p: p.name)
def test_unknown_model_is_rejected(provider):
    assert field_of(lambda: provider.validate("no-such-model", "p", ["c"], {})) == "model"


def test_registry_describes_every_provider():
    registry = build_registry(ProviderSettings(runway_simulated=True))
    assert {"wan_local", "sam3", "runway"} <= set(registry)
    wan, sam, rw = registry["wan_local"], registry["sam3"], registry["runway"]
    assert (wan.queue, sam.queue, rw.queue) == ("wan_local", "sam3", "runway")
    assert (wan.prompt_field, sam.prompt_field, rw.prompt_field) == ("prompt", "prompts", "prompt")
    assert wan.demo and sam.demo and rw.demo
    for provider in registry.values():
        json.dumps(provider.describe())
    real = build_registry(
        ProviderSettings(wan_model="/models/Wan2.2-TI2V-5B-Diffusers", sam3_model="facebook/sam3")
    )
    assert not real["wan_local"].demo and not real["sam3"].demo and not real["runway"].demo
    assert real["wan_local"].layout == "ti2v"
    assert {p.name: p.default for p in real["wan_local"].params("wan_i2v")}["resolution"] == "720p"


def test_building_providers_does_not_import_torch():
    code = (
        "import sys\n"
        "from providers import ProviderSettings, build_registry\n"
        "r = build_registry(ProviderSettings(enable_echo=True))\n"
        "[p.describe() for p in r.values()]\n"
        "r['wan_local'].validate(None, 'p', None, {})\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)


def test_layout_detection_from_model_index():
    assert (
        detect_layout({"_class_name": "WanImageToVideoPipeline", "image_encoder": ["transformers", "X"]})
        == "wan2.1"
    )
    assert (
        detect_layout({"boundary_ratio": 0.9, "transformer_2": ["diffusers", "WanTransformer3DModel"]})
        == "wan2.2"
    )
    assert detect_layout({"_class_name": "WanPipeline", "expand_timesteps": True}) == "ti2v"


@pytest.mark.parametrize("multiple", [16, 32])
@pytest.mark.parametrize("size", [(80, 60), (1920, 1080), (1080, 1920), (1000, 1000), (333, 1777)])
@pytest.mark.parametrize("preset", sorted(RESOLUTIONS))
def test_grid_size_keeps_the_aspect_within_one_grid_step_near_the_budget(size, preset, multiple):
    w, h = size
    budget = RESOLUTIONS[preset]
    gw, gh = grid_size(w, h, budget, multiple)
    assert gw % multiple == 0 and gh % multiple == 0
    # The width the image's aspect ratio asks for at that height, to within one grid step.
    assert abs(gw - gh * w / h) <= multiple
    assert gw * gh <= budget + multiple * max(gw, gh)


@pytest.mark.parametrize("size", [(4000, 2), (2, 4000), (1920, 1080)])
def test_grid_size_keeps_each_side_within_max_side(size):
    w, h = size
    gw, gh = grid_size(w, h, RESOLUTIONS["720p"], 16, max_side=1024)
    assert gw <= 1024 and gh <= 1024 and gw % 16 == 0 and gh % 16 == 0
    # Without a limit only the budget bounds the size (a 4000x2 banner gets 32000 x 16).
    assert max(grid_size(w, h, RESOLUTIONS["720p"], 16)) > 1024 or size == (1920, 1080)


@pytest.mark.parametrize("preset", ["480p", "720p"])
def test_a_photo_of_the_presets_own_shape_gets_exactly_that_size(preset):
    # sqrt(399360 x 480/832) is 479.99...: truncated, it cost a whole grid step (768x448).
    w, h = RESOLUTION_SIZES[preset]
    assert grid_size(w, h, RESOLUTIONS[preset], 16) == (w, h)
    assert grid_size(h, w, RESOLUTIONS[preset], 16) == (h, w)
