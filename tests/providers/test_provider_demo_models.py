"""The demo model builders: idempotent, and safe when several callers race."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from providers import demo_models
from providers.demo_models import MARKER, ensure_demo_sam3, ensure_demo_wan, is_demo_model


def test_losing_a_build_race_keeps_the_winners_model(tmp_path):
    """Another process finishes while we build: our rename fails, theirs stays, our copy goes."""
    calls = []

    def build(out: Path) -> None:
        calls.append(out)
        (out / "weights.bin").write_text(f"build {len(calls)}")
        if len(calls) == 1:  # the "other process" builds and renames into place meanwhile
            demo_models._build_and_rename(tmp_path, tmp_path / "m", "m", build, {})

    path = demo_models._ensure(tmp_path, "m", build, {})
    assert path == str(tmp_path / "m")
    assert (tmp_path / "m" / "weights.bin").read_text() == "build 2"
    assert is_demo_model(path)
    assert [p.name for p in tmp_path.iterdir()] == ["m"]
    assert demo_models._ensure(tmp_path, "m", build, {}) == path and len(calls) == 2


def test_a_leftover_without_marker_is_replaced(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "half-written").write_text("")
    path = demo_models._ensure(tmp_path, "m", lambda out: (out / "ok").write_text("1"), {})
    assert sorted(p.name for p in Path(path).iterdir()) == [MARKER, "ok"]


@pytest.mark.models
def test_concurrent_builds_leave_one_complete_model(tmp_path):
    results: list[str] = []
    errors: list[BaseException] = []

    def build():
        try:
            results.append(ensure_demo_sam3(tmp_path))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(results)) == 1
    built = Path(results[0])
    assert is_demo_model(built)
    assert json.loads((built / MARKER).read_text())["seed"] == 0
    assert (built / "model.safetensors").is_file() and (built / "tokenizer.json").is_file()
    # only the finished model is left: no temporary build directories
    assert [p.name for p in tmp_path.iterdir()] == [built.name]


@pytest.mark.models
def test_builds_are_reused(demo_model_root):
    path = Path(ensure_demo_wan(demo_model_root))
    stamp = (path / MARKER).stat().st_mtime_ns
    assert ensure_demo_wan(demo_model_root) == str(path)
    assert (path / MARKER).stat().st_mtime_ns == stamp
    index = json.loads((path / "model_index.json").read_text())
    assert index["_class_name"] == "WanImageToVideoPipeline" and index["image_encoder"][0] == "transformers"


def test_unknown_layout_is_refused(tmp_path):
    with pytest.raises(ValueError):
        ensure_demo_wan(tmp_path, "wan9")
