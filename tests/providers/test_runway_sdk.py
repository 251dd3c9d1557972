"""Contract tests: Runway's official SDK (`runwayml`) against the Runway simulator, and our
client's requests against the SDK's types.

The SDK is the published description of Runway's API: where it and the simulator disagree, the
simulator is wrong. Responses are parsed with the SDK's strict validation, so a missing or mistyped
field fails here instead of being papered over (the lenient default parses a task without `cost` /
`estimatedCost` as PENDING whatever its status).
"""

from __future__ import annotations

import time
import typing
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from runwayml import BadRequestError, NotFoundError, RunwayML
from runwayml.lib import polling
from runwayml.types import image_to_video_create_params as create_params
from runwayml.types import task_retrieve_response as states
from runwayml.types.image_to_video_create_response import ImageToVideoCreateResponse

from providers.runway import MODELS, PROMPT_MAX_CHARS, image_data_uri
from providers.runway_sim import RUNWAY_MODELS

OUR_MODELS = sorted(MODELS)
# A 1x1 GIF: an image type Runway does not take.
GIF_URI = "data:image/gif;base64,R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw=="


def _unwrap(hint: Any) -> tuple[bool, str | None, Any]:
    """(required, wire name, type) of one TypedDict annotation of the SDK."""
    required = typing.get_origin(hint) is typing.Required
    if required:
        hint = typing.get_args(hint)[0]
    alias = None
    if typing.get_origin(hint) is typing.Annotated:
        alias = next((m.alias for m in hint.__metadata__ if getattr(m, "alias", None)), None)
        hint = typing.get_args(hint)[0]
    return required, alias, hint


def sdk_fields(params_type: type) -> dict[str, tuple[bool, Any]]:
    """The request body fields of an SDK params TypedDict: wire name -> (required, type)."""
    out = {}
    for name, hint in typing.get_type_hints(params_type, include_extras=True).items():
        required, alias, inner = _unwrap(hint)
        out[alias or name] = (required, inner)
    return out


def sdk_params_by_model() -> dict[str, type]:
    out = {}
    for params_type in typing.get_args(create_params.ImageToVideoCreateParams):
        [model] = typing.get_args(sdk_fields(params_type)["model"][1])
        out[model] = params_type
    return out


def literal_values(hint: Any) -> set[Any] | None:
    return set(typing.get_args(hint)) if typing.get_origin(hint) is typing.Literal else None


def image_positions(params_type: type) -> set[str]:
    """Positions the array form of `promptImage` takes (its item TypedDict's `position` Literal)."""
    union = sdk_fields(params_type)["promptImage"][1]
    [iterable] = [a for a in typing.get_args(union) if a is not str]
    [item_type] = typing.get_args(iterable)
    return literal_values(sdk_fields(item_type)["position"][1]) or set()


def expected_credits(model: str) -> float:
    m = MODELS[model]
    return m.credits_per_second * m.default_duration


def create_kwargs(model: str, image: Any, **changes: Any) -> dict[str, Any]:
    """What the SDK's `image_to_video.create` needs for `model`, with our client's defaults."""
    m = MODELS[model]
    kwargs = {
        "model": model,
        "prompt_image": image,
        "prompt_text": "a red square drifts",
        "ratio": m.ratios[0],
        "duration": m.default_duration,
    }
    kwargs.update(changes)
    return {k: v for k, v in kwargs.items() if v is not None}


@pytest.fixture
def sdk(runway_sim, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunwayML]:
    # The SDK's wait loop sleeps about 6 s between polls; the simulator's tasks take a fraction of one.
    monkeypatch.setattr(polling, "POLL_TIME", 0.02)
    monkeypatch.setattr(polling, "POLL_JITTER", 0.0)
    client = RunwayML(
        api_key="test-key", base_url=runway_sim.base_url, max_retries=0, _strict_response_validation=True
    )
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def image_uri(input_image) -> str:
    return image_data_uri(input_image)


def test_every_model_we_offer_is_one_the_sdk_creates():
    offered = set(sdk_params_by_model())
    assert set(MODELS) <= offered, set(MODELS) - offered
    assert set(RUNWAY_MODELS) == set(MODELS)


@pytest.mark.parametrize("model", OUR_MODELS)
def test_simulator_and_client_rules_match_the_sdk_types(model):
    fields = sdk_fields(sdk_params_by_model()[model])
    sim, client = RUNWAY_MODELS[model], MODELS[model]
    required = {name for name, (req, _) in fields.items() if req}
    assert required == (
        {"model", "promptImage", "ratio"}
        | ({"duration"} if sim.duration_required else set())
        | ({"promptText"} if sim.prompt_required else set())
    )
    assert client.prompt_required == ("promptText" in required)
    ratios = literal_values(fields["ratio"][1])
    assert ratios == set(sim.ratios) and set(client.ratios) <= ratios
    durations = literal_values(fields["duration"][1])
    if durations is not None:
        assert durations == set(sim.durations)
    assert set(client.durations) <= (durations or set(sim.durations))
    assert sim.takes_audio == client.takes_audio == ("audio" in fields)
    assert image_positions(sdk_params_by_model()[model]) == set(sim.positions)


@pytest.mark.parametrize("model", OUR_MODELS)
def test_sdk_reads_every_task_state_of_the_simulator(model, sdk, runway_sim, image_uri):
    credits = expected_credits(model)
    # Each task keeps the timings it was created under: one parked in each unfinished state.
    runway_sim.configure(throttled_s=600)
    throttled = sdk.image_to_video.create(**create_kwargs(model, image_uri))
    runway_sim.configure(throttled_s=0, pending_s=600)
    pending = sdk.image_to_video.create(**create_kwargs(model, image_uri))
    runway_sim.configure(pending_s=0, duration_s=600)
    running = sdk.image_to_video.create(**create_kwargs(model, image_uri))
    runway_sim.configure(duration_s=0.2)
    created = sdk.image_to_video.create(**create_kwargs(model, image_uri))

    assert isinstance(created, ImageToVideoCreateResponse)
    assert created.estimated_cost.credits == pytest.approx(credits)
    seen = {
        "throttled": sdk.tasks.retrieve(throttled.id),
        "pending": sdk.tasks.retrieve(pending.id),
        "running": sdk.tasks.retrieve(running.id),
    }
    assert isinstance(seen["throttled"], states.Throttled)
    assert isinstance(seen["pending"], states.Pending)
    assert isinstance(seen["running"], states.Running) and 0 <= seen["running"].progress < 1
    for task in seen.values():
        assert task.estimated_cost.credits == pytest.approx(credits)

    done = created.wait_for_task_output(timeout=60)
    assert isinstance(done, states.Succeeded)
    assert done.id == created.id and done.cost.credits == round(credits)
    video = requests.get(done.output[0], timeout=10)
    assert video.status_code == 200 and video.headers["Content-Type"] == "video/mp4"
    assert video.content[4:8] == b"ftyp"  # an mp4 box header

    # Cancelled before it ran: refunded; cancelled while running: charged.
    sdk.tasks.delete(pending.id)
    sdk.tasks.delete(running.id)
    refunded, charged = sdk.tasks.retrieve(pending.id), sdk.tasks.retrieve(running.id)
    assert isinstance(refunded, states.Cancelled) and refunded.cost.credits == 0
    assert isinstance(charged, states.Cancelled) and charged.cost.credits == round(credits)

    # Deleting a finished or cancelled task removes it.
    for task_id in (done.id, pending.id):
        sdk.tasks.delete(task_id)
        with pytest.raises(NotFoundError):
            sdk.tasks.retrieve(task_id)
    sdk.tasks.delete(throttled.id)
    assert isinstance(sdk.tasks.retrieve(throttled.id), states.Cancelled)


@pytest.mark.parametrize("model", OUR_MODELS)
def test_sdk_reads_the_failure_code_of_a_failed_task(model, sdk, runway_sim, image_uri):
    runway_sim.configure(
        duration_s=0.05, fail_code="SAFETY.INPUT.IMAGE", fail_message="The image did not pass moderation."
    )
    created = sdk.image_to_video.create(**create_kwargs(model, image_uri))
    with pytest.raises(polling.TaskFailedError) as err:
        created.wait_for_task_output(timeout=60)
    failed = err.value.task_details
    assert isinstance(failed, states.Failed)
    assert failed.failure_code == "SAFETY.INPUT.IMAGE"
    assert failed.failure == "The image did not pass moderation."
    assert failed.cost.credits == 0  # a failed task is refunded
    again = sdk.tasks.retrieve(created.id)
    assert isinstance(again, states.Failed) and again.failure_code == "SAFETY.INPUT.IMAGE"


@pytest.mark.parametrize("model", OUR_MODELS)
def test_prompt_image_as_an_array_and_as_an_upload(model, sdk, runway_sim, input_image, image_uri):
    upload = sdk.uploads.create_ephemeral(file=input_image)
    assert upload.uri.startswith("runway://")
    frames = [{"uri": upload.uri, "position": "first"}]
    if "last" in RUNWAY_MODELS[model].positions:
        frames.append({"uri": image_uri, "position": "last"})
    runway_sim.configure(duration_s=0.05)
    created = sdk.image_to_video.create(**create_kwargs(model, frames))
    done = created.wait_for_task_output(timeout=60)
    assert isinstance(done, states.Succeeded) and done.output
    assert runway_sim.stats()["uploads"] == 1


@pytest.mark.parametrize(
    ("model", "changes", "path"),
    [
        ("gen4_turbo", {"prompt_image": "http://example.com/a.png"}, ["promptImage"]),
        ("gen4_turbo", {"prompt_image": "ftp://example.com/a.png"}, ["promptImage"]),
        ("gen4_turbo", {"prompt_image": "https://203.0.113.5/a.png"}, ["promptImage"]),
        ("gen4_turbo", {"prompt_image": "https://example.com/" + "a" * 2048}, ["promptImage"]),
        ("gen4_turbo", {"prompt_image": GIF_URI}, ["promptImage"]),
        ("gen4_turbo", {"prompt_image": "data:image/png,not-base64"}, ["promptImage"]),
        ("gen4_turbo", {"prompt_image": "runway://uploads/never-uploaded"}, ["promptImage"]),
        ("gen4_turbo", {"prompt_image": [{"uri": GIF_URI, "position": "first"}]}, ["promptImage", 0, "uri"]),
        (
            "gen4_turbo",
            {"prompt_image": [{"uri": "https://example.com/a.png", "position": "last"}]},
            ["promptImage", 0, "position"],
        ),
        (
            "veo3.1",
            {"prompt_image": [{"uri": "https://example.com/a.png", "position": "last"}]},
            ["promptImage"],
        ),
        (
            "veo3.1_fast",
            {
                "prompt_image": [
                    {"uri": f"https://example.com/{i}.png", "position": "first"} for i in range(2)
                ]
            },
            ["promptImage"],
        ),
        ("gen4.5", {"prompt_text": None}, ["promptText"]),
        ("gen4.5", {"prompt_text": ""}, ["promptText"]),
        ("gen4.5", {"duration": None}, ["duration"]),
        # 999 + 2 UTF-16 code units: over the limit as Runway counts, though 1000 characters.
        ("gen4_turbo", {"prompt_text": "a" * 999 + "\U0001f600"}, ["promptText"]),
        ("veo3.1", {"duration": 5}, ["duration"]),
        ("veo3.1", {"ratio": "960:960"}, ["ratio"]),
        ("veo3.1_fast", {"audio": "yes"}, ["audio"]),
        ("gen4_turbo", {"ratio": "1920:1080"}, ["ratio"]),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 20 else None,
)
def test_simulator_refuses_what_runway_refuses(model, changes, path, sdk, runway_sim, image_uri):
    kwargs = create_kwargs(model, changes.pop("prompt_image", image_uri))
    for key, value in changes.items():
        if value is None:
            kwargs.pop(key)
        else:
            kwargs[key] = value
    with pytest.raises(BadRequestError) as err:
        sdk.image_to_video.create(**kwargs)
    body = err.value.body
    assert isinstance(body, dict) and body["error"].startswith("Validation of body failed")
    assert path in [issue["path"] for issue in body["issues"]], body
    assert runway_sim.stats()["tasks_created"] == 0


def test_prompt_length_counts_utf16_code_units(sdk, runway_sim, image_uri):
    # 998 + 2 = 1000 code units: exactly Runway's limit.
    prompt = "a" * (PROMPT_MAX_CHARS - 2) + "\U0001f600"
    sdk.image_to_video.create(**create_kwargs("gen4.5", image_uri, prompt_text=prompt))
    assert runway_sim.stats()["tasks_created"] == 1


def test_sdk_wait_does_not_stop_on_a_cancelled_task(sdk, runway_sim, image_uri):
    # Why our worker polls itself: the SDK's synchronous wait treats CANCELLED as unfinished.
    runway_sim.configure(throttled_s=600)
    created = sdk.image_to_video.create(**create_kwargs("gen4_turbo", image_uri))
    sdk.tasks.delete(created.id)
    with pytest.raises(polling.TaskTimeoutError) as err:
        created.wait_for_task_output(timeout=0.3)
    assert isinstance(err.value.task_details, states.Cancelled)


def test_sdk_resends_a_create_whose_answer_is_late(runway_sim, image_uri):
    # Why our worker does not use the SDK: by default it re-sends a POST that timed out, and the
    # first one still makes (and bills) a task. Our client sends it once (test_lost_post_answer_is_not_resent).
    runway_sim.configure(slow_s=1.5, slow_count=1, fault_methods=["POST"])
    with RunwayML(api_key="test-key", base_url=runway_sim.base_url, timeout=0.5, max_retries=1) as client:
        created = client.image_to_video.create(**create_kwargs("gen4_turbo", image_uri))
    deadline = time.monotonic() + 20
    while runway_sim.stats()["tasks_created"] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    stats = runway_sim.stats()
    assert stats["requests"]["POST /v1/image_to_video"] == 2
    assert stats["tasks_created"] == 2 and created.id in stats["tasks"]


@pytest.mark.parametrize("model", OUR_MODELS)
def test_client_requests_match_the_sdk_types(model, runway, runway_sim, make_run, input_image):
    fields = sdk_fields(sdk_params_by_model()[model])
    spec = runway.validate(model, "a red square drifts", None, {})
    result = runway.run(input_image, spec, make_run().ctx())
    task = runway_sim.stats()["tasks"][result.meta["remote_id"]]
    sent = set(task["fields"])
    required = {name for name, (req, _) in fields.items() if req}
    assert required <= sent <= set(fields), (sent - set(fields), required - sent)
    assert task["ratio"] in literal_values(fields["ratio"][1])
    durations = literal_values(fields["duration"][1])
    assert durations is None or task["duration"] in durations
    # The recorded cost is what the task reports as charged.
    assert result.meta["cost_source"] == "runway"
    assert result.meta["credits"] == task["credits"] == round(expected_credits(model))
