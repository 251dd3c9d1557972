"""Parameter validation in process, no running system: every refusal is an InvalidInput naming the
field, whether `app` checks it (a job's fields) or a provider does (its parameters)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from app.config import reset_settings
from app.errors import InputConflict, InvalidInput
from app.models import Job
from app.provider_registry import provider, registry, validate
from app.services import intake
from app.services.jobs import IdempotencyConflict, Submission, _Items, _same_request, create_job
from providers import (
    ModelInfo,
    Provider,
    ProviderSettings,
    build_registry,
    provider_classes,
    provider_queues,
    register,
)
from providers import registry as registry_module


@pytest.fixture(autouse=True)
def deployment(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Settings of an embedded deployment with the diagnostic provider, read afresh."""
    monkeypatch.setenv("VAR_DIR", str(tmp_path))
    monkeypatch.setenv("SECRET_KEY", "test")
    monkeypatch.setenv("ENABLE_ECHO_PROVIDER", "1")
    monkeypatch.setenv("DEMO_MODEL_DIR", str(tmp_path / "models"))
    reset_settings()
    registry.cache_clear()
    yield
    reset_settings()
    registry.cache_clear()


def refused(call: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as err:
        call()
    return err.value


def submit(**fields: Any) -> InvalidInput:
    """The refusal of a submission that fails before any database or storage access."""
    base: dict[str, Any] = {"provider": "echo", "model": None, "inputs": ["a.png"]}
    return refused(lambda: create_job(Submission(**{**base, **fields}), None))


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"provider": None}, "provider"),
        ({"provider": "nope"}, "provider"),
        ({"provider": 5}, "provider"),
        ({"prompt": 5}, "prompt"),
        ({"prompts": "cat"}, "prompts"),
        ({"prompts": ["cat", 1]}, "prompts"),
        ({"params": ["delay_s"]}, "params"),
        ({"priority": "urgent"}, "priority"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"max_concurrency": True}, "max_concurrency"),
        ({"model": 3}, "model"),
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"idempotency_key": "k" * 201}, "idempotency_key"),
        ({"inputs_prefix": "photos/"}, "inputs_prefix"),
        ({"inputs": None}, "inputs"),
        ({"inputs": []}, "inputs"),
        ({"inputs": "a.png"}, "inputs"),
        ({"inputs": ["a.png", 5]}, "inputs[1]"),
        ({"inputs": [{"prompt": "x"}]}, "inputs[0].key"),
        ({"inputs": [{"key": "a.png", "colour": 1}]}, "inputs[0].colour"),
        ({"inputs": [{"key": "a.png", "prompt": 3}]}, "inputs[0].prompt"),
        ({"inputs": [{"key": "a.png", "prompts": "cat"}]}, "inputs[0].prompts"),
        ({"inputs": [{"key": "a.png", "params": []}]}, "inputs[0].params"),
    ],
)
def test_create_job_refuses_a_bad_field_naming_it(fields: dict[str, Any], field: str) -> None:
    error = submit(**fields)
    assert error.field == field, error.message
    assert (error.status, error.code) == (400, "invalid_parameter")


def test_create_job_refuses_more_inputs_than_a_job_may_have(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_ITEMS_PER_JOB", "2")
    reset_settings()
    assert submit(inputs=["a.png", "b.png", "c.png"]).field == "inputs"


def test_reused_idempotency_key_with_another_request_is_a_conflict() -> None:
    job = Job(idempotency_key="order-7", request_hash="first")
    assert _same_request(job, "first") is job
    error = refused(lambda: _same_request(job, "second"))
    assert isinstance(error, IdempotencyConflict) and isinstance(error, InputConflict)
    assert (error.status, error.code, error.field) == (409, "idempotency_conflict", "idempotency_key")


@pytest.mark.parametrize(
    ("name", "model", "prompt", "prompts", "params", "field"),
    [
        ("echo", None, None, None, {"delay_s": -1}, "params.delay_s"),
        ("echo", None, None, None, {"fail": "sometimes"}, "params.fail"),
        ("echo", None, None, None, {"colour": "red"}, "params.colour"),
        ("echo", "other", None, None, {}, "model"),
        ("wan_local", None, "a cat", None, {"num_frames": 10}, "params.num_frames"),
        ("wan_local", None, "a cat", None, {"steps": 0}, "params.steps"),
        ("wan_local", None, "a cat", None, {"resolution": "4k"}, "params.resolution"),
        ("wan_local", None, "x" * 2001, None, {}, "prompt"),
        ("wan_local", None, "a cat", None, {"negative_prompt": "x" * 2001}, "params.negative_prompt"),
        ("sam3", None, None, [], {}, "prompts"),
        ("sam3", None, None, ["x" * 201], {}, "prompts"),
        ("sam3", None, None, ["cat"], {"score_threshold": 2.0}, "params.score_threshold"),
        ("runway", "gen4_turbo", "waves", None, {"ratio": "1920:1080"}, "params.ratio"),
        ("runway", "gen4_turbo", "waves", None, {"duration": 7}, "params.duration"),
        ("runway", "gen4.5", None, None, {}, "prompt"),
        ("runway", "gen5", "waves", None, {}, "model"),
        ("runway", "gen4_turbo", "x" * 1001, None, {}, "prompt"),
    ],
)
def test_each_providers_refusal_becomes_invalid_input_naming_the_field(
    name: str, model: str | None, prompt: str | None, prompts: list[str] | None, params: dict, field: str
) -> None:
    error = refused(lambda: validate(provider(name), model, prompt, prompts, params))
    assert type(error) is InvalidInput
    assert error.field == field, error.message


def test_an_items_own_parameters_are_checked_under_the_name_the_user_wrote() -> None:
    echo = provider("echo")
    sub = Submission(provider="echo", model=None, inputs=None, params={"delay_s": 0})
    spec = validate(echo, None, None, None, {})
    entries = [
        intake.Entry(key="a.png"),
        intake.Entry(key="b.png", params={"delay_s": -5}),
    ]
    error = refused(lambda: _Items(echo, spec, sub).rows(entries))
    assert error.field == "inputs[1].params.delay_s", error.message
    # A shorthand (`seed` beside `key`) is named as written, not as the parameter it stands for.
    wan = provider("wan_local")
    wan_spec = validate(wan, None, "a cat", None, {})
    wan_sub = Submission(provider="wan_local", model=None, inputs=None, prompt="a cat")
    seeded = intake.Entry(key="c.png", params={"seed": -1}, shorthands=("seed",))
    error = refused(lambda: _Items(wan, wan_spec, wan_sub).rows([seeded]))
    assert error.field == "inputs[0].seed", error.message


def test_a_provider_registered_in_one_line_is_built_only_where_enabled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Registered for this test only: the process's registry is left as it was.
    monkeypatch.setattr(registry_module, "_registered", dict(registry_module._registered))

    class Lower(Provider):
        name = "lower_in_process"
        queue = "lower_in_process"

        @classmethod
        def enabled(cls, settings: Any) -> bool:
            return settings.enable_echo

        def models(self) -> list:
            return [ModelInfo("lower", "Lower")]

        def params(self, model: str) -> list:
            return []

        def run(self, input_path: Any, spec: Any, ctx: Any) -> Any:
            raise NotImplementedError

    register(Lower)
    assert provider_classes()["lower_in_process"] is Lower
    assert "lower_in_process" in provider_queues()
    assert "lower_in_process" in build_registry(ProviderSettings(enable_echo=True))
    assert "lower_in_process" not in build_registry(ProviderSettings(enable_echo=False))
    with pytest.raises(ValueError, match="two providers are named"):
        register(type("Lower", (Lower,), {}))
