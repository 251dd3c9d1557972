"""Fixtures for running providers directly (no Celery): a fake run context built from
the real RunContext dataclass, tiny demo models built once per session, a local
Runway-compatible server per test."""

from __future__ import annotations

import os

# No model hub here; set before huggingface_hub / transformers are imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from collections.abc import Callable, Iterator  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from providers.base import Cancelled, RunContext  # noqa: E402


@dataclass
class FakeRun:
    """Records what a provider does with its RunContext.

    `cancel_when(run)` is evaluated at every `check_cancelled()`; `on_progress(run, fraction,
    message)` runs at every progress report (it may raise, to simulate a worker dying).
    """

    workdir: Path
    item_id: str = "item-1"
    attempt: int = 1
    store: dict[str, str] = field(default_factory=dict)
    progress: list[tuple[float, str | None]] = field(default_factory=list)
    cancel_checks: int = 0
    cancelled: bool = False
    cancel_when: Callable[[FakeRun], bool] | None = None
    on_progress: Callable[[FakeRun, float, str | None], None] | None = None
    deadline: float | None = None
    input_url: str | None = None

    def _report(self, fraction: float, message: str | None) -> None:
        self.progress.append((fraction, message))
        if self.on_progress is not None:
            self.on_progress(self, fraction, message)

    def _check(self) -> None:
        self.cancel_checks += 1
        if self.cancelled or (self.cancel_when is not None and self.cancel_when(self)):
            self.cancelled = True
            raise Cancelled()

    def ctx(self) -> RunContext:
        return RunContext(
            item_id=self.item_id,
            attempt=self.attempt,
            workdir=self.workdir,
            report_progress=self._report,
            check_cancelled=self._check,
            remember=self.store.__setitem__,
            recall=self.store.get,
            deadline=self.deadline,
            input_url=self.input_url,
        )

    def messages(self) -> list[str]:
        return [m for _, m in self.progress if m]


@pytest.fixture
def make_run(tmp_path: Path) -> Callable[..., FakeRun]:
    counter = iter(range(1000))

    def make(**kw) -> FakeRun:
        workdir = tmp_path / f"work{next(counter)}"
        workdir.mkdir()
        return FakeRun(workdir=workdir, **kw)

    return make


@pytest.fixture
def input_image(tmp_path: Path) -> Path:
    """An 80x60 (non-square) RGB PNG with some structure."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = (rng.random((60, 80, 3)) * 80).astype("uint8")
    pixels[10:40, 20:50] = (220, 40, 40)
    pixels[35:55, 50:75] = (40, 200, 60)
    path = tmp_path / "input.png"
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="session")
def demo_model_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny WAN (2.1 layout) and SAM3 models, built once per session."""
    from providers.demo_models import ensure_demo_sam3, ensure_demo_wan

    root = tmp_path_factory.mktemp("models")
    ensure_demo_wan(root)
    ensure_demo_sam3(root)
    return str(root)


@pytest.fixture(scope="session")
def wan_provider(demo_model_root: str):
    from providers.wan import WanProvider

    provider = WanProvider(demo_model_dir=demo_model_root)
    provider.load("cpu")
    return provider


@pytest.fixture(scope="session")
def sam3_provider(demo_model_root: str):
    from providers.sam3 import Sam3Provider

    provider = Sam3Provider(demo_model_dir=demo_model_root)
    provider.load("cpu")
    return provider


@pytest.fixture
def runway_sim() -> Iterator:
    from providers.runway_sim import RunwaySimServer

    server = RunwaySimServer(duration_s=0.2, pending_s=0.05)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def runway(runway_sim):
    """A Runway provider pointed at the simulator, with fast polling and backoff."""
    from providers.runway import RunwayProvider

    return RunwayProvider(
        runway_sim.base_url,
        "test-key",
        simulated=True,
        poll_interval_s=0.03,
        backoff_base_s=0.02,
        backoff_max_s=0.1,
        request_timeout_s=5.0,
    )
