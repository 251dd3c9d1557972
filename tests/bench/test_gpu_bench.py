"""bench/gpu.py end to end with `--tiny` (tiny demo models, CPU), so the GPU benchmark cannot rot
between the runs on a GPU host: it builds its models, starts a system and each worker through the
normal worker command, submits through the API and writes its markdown section."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.gpu import END, START, write_section

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], str, Path]:
    tmp = tmp_path_factory.mktemp("gpu-bench")
    out = tmp / "benchmarks.md"
    out.write_text(f"# Benchmarks\n\nEarlier text.\n\n{START}\nan older section\n{END}\n\nText after.\n")
    # The bench starts its own Redis: a REDIS_URL it was given would be flushed (it may be the
    # test session's own). A DATABASE_URL server gets a fresh database, dropped after.
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "bench.gpu", "--tiny", "--models-dir", str(tmp / "models"), "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-5000:]
    figures = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return figures, done.stdout, out


@pytest.mark.timeout(1000)
def test_every_figure_is_measured(tiny_run) -> None:
    figures, _, _ = tiny_run
    by_metric = {f["metric"]: f for f in figures}
    # SAM3 at batch 1 and at the micro-batch size (3 with --tiny), both WAN layouts, each with its
    # load time, 1-step and N-step videos and the per-step split.
    for metric in (
        "sam3_images_per_s_batch1",
        "sam3_images_per_s_batch3",
        "sam3_load_s",
        "wan_ti2v_load_s",
        "wan_ti2v_demo_s_per_video_1steps",
        "wan_ti2v_demo_s_per_video_2steps",
        "wan_ti2v_demo_s_fixed",
        "wan_a14b_load_s",
        "wan_a14b_demo_s_per_video_2steps",
    ):
        assert metric in by_metric, sorted(by_metric)
    for metric in (
        "sam3_images_per_s_batch1",
        "sam3_images_per_s_batch3",
        "sam3_load_s",
        "wan_ti2v_load_s",
        "wan_ti2v_demo_s_per_video_2steps",
        "wan_a14b_load_s",
        "wan_a14b_demo_s_per_video_2steps",
    ):
        assert by_metric[metric]["value"] > 0, by_metric[metric]
    # The micro-batch run really batched: items shared forward passes.
    assert by_metric["sam3_images_per_s_batch3"]["mean_batch"] > 1
    # The tiny WAN renders 9 frames at the "demo" preset.
    assert by_metric["wan_ti2v_demo_s_per_video_2steps"]["shape"].endswith("x9")
    # No GPU here: no GPU memory figure, but the worker's own peak RSS.
    assert by_metric["sam3_peak_gpu_batch1"]["value"] is None
    assert by_metric["sam3_peak_rss_batch1"]["value"] > 0


@pytest.mark.timeout(1000)
def test_the_section_replaces_the_earlier_one(tiny_run) -> None:
    _, stdout, out = tiny_run
    text = out.read_text()
    assert text.startswith("# Benchmarks\n\nEarlier text.\n\n") and text.endswith("\nText after.\n")
    assert text.count(START) == 1 and text.count(END) == 1 and "an older section" not in text
    section = text[text.index(START) : text.index(END) + len(END)]
    # What the run printed is what it wrote.
    assert section in stdout
    rows = [line for line in section.splitlines() if line.startswith("| ")][1:]
    models = {row.split("|")[1].strip() for row in rows}
    assert models == {"SAM3", "WAN TI2V-5B", "WAN I2V A14B"}
    assert any("micro-batch 3" in row for row in rows)


def test_a_file_without_a_section_gets_one_appended(tmp_path) -> None:
    path = tmp_path / "b.md"
    path.write_text("# Benchmarks\n")
    write_section(path, f"{START}\nfirst\n{END}\n")
    write_section(path, f"{START}\nsecond\n{END}\n")
    assert path.read_text() == f"# Benchmarks\n\n{START}\nsecond\n{END}\n"


def test_a14b_runs_only_where_its_weights_fit(tmp_path, monkeypatch) -> None:
    """A14B's bf16 weights (two 14 B transformers and UMT5-XXL, about 68 GB) must fit on the disk
    and, without offloading, on the GPU: an 80 GB card is refused, a 141 GB one is not."""
    import shutil
    from types import SimpleNamespace

    from bench.gpu import a14b_room

    h100 = {"index": "0", "name": "H100", "total_mib": "81559"}
    h200 = {"index": "0", "name": "H200", "total_mib": "143771"}
    monkeypatch.setattr(shutil, "disk_usage", lambda _path: SimpleNamespace(free=1 << 40))
    assert a14b_room(tmp_path, h200) is None
    assert "GPU memory" in (a14b_room(tmp_path, h100) or "")
    monkeypatch.setattr(shutil, "disk_usage", lambda _path: SimpleNamespace(free=40 << 30))
    assert "disk" in (a14b_room(tmp_path, h200) or "")


def test_the_recorded_command_names_no_host_paths() -> None:
    from bench.gpu import command

    argv = [
        "--out",
        "/srv/x/docs/benchmarks.md",
        "--models-dir=/data/m",
        "--a14b",
        "--wan-steps",
        "8",
        "--keep",
    ]
    assert command(argv) == "python -m bench.gpu --a14b --wan-steps 8"
