"""Runway provider against the local Runway-compatible server (real HTTP, no torch)."""

from __future__ import annotations

import base64
import time

import pytest
import requests

from providers.base import Cancelled, FatalError, JobSpec, ParamError, RetryableError
from providers.runway import API_VERSION, TASK_KEY, fetchable_by_runway, image_data_uri


def spec_for(runway, model="gen4_turbo", prompt="a cat walks", **params):
    return runway.validate(model, prompt, None, params)


def read_frames(path) -> int:
    import imageio.v2 as imageio

    reader = imageio.get_reader(str(path), format="FFMPEG")
    try:
        return sum(1 for _ in reader)
    finally:
        reader.close()


def test_success_downloads_the_video(runway, runway_sim, make_run, input_image):
    run = make_run()
    result = runway.run(input_image, spec_for(runway, duration=5), run.ctx())

    [video] = result.outputs
    assert video.role == "video" and video.content_type == "video/mp4"
    assert read_frames(video.path) == 5 * 8  # the simulator renders 8 fps
    stats = runway_sim.stats()
    assert stats["tasks_created"] == 1
    assert stats["output_downloads"] == 1
    assert stats["output_requests_with_auth"] == 0  # the API key never goes to the output host
    task_id = result.meta["remote_id"]
    assert run.store[TASK_KEY] == task_id
    assert stats["tasks"][task_id]["model"] == "gen4_turbo"
    assert stats["tasks"][task_id]["promptText"] == "a cat walks"
    assert result.meta["cost_usd"] == pytest.approx(0.25)  # 5 s x 5 credits x $0.01
    assert result.meta["cost_source"] == "runway"  # the task's reported cost
    assert result.meta["resumed"] is False
    assert any(m.startswith("running") for m in run.messages())
    assert run.progress[-1] == (1.0, "done")


def test_throttled_then_success(runway, runway_sim, make_run, input_image):
    runway_sim.configure(throttled_s=0.3)
    run = make_run()
    result = runway.run(input_image, spec_for(runway), run.ctx())
    messages = run.messages()
    assert "throttled" in messages
    first_running = next(i for i, m in enumerate(messages) if m.startswith("running"))
    assert messages.index("throttled") < first_running
    assert result.outputs[0].path.stat().st_size > 0
    assert runway_sim.stats()["tasks_created"] == 1


def test_429_twice_then_success(runway, runway_sim, make_run, input_image):
    runway_sim.configure(fail_429=2)
    result = runway.run(input_image, spec_for(runway), make_run().ctx())
    stats = runway_sim.stats()
    assert stats["faults_served"]["429"] == 2
    assert stats["requests"]["POST /v1/image_to_video"] == 3
    assert stats["tasks_created"] == 1
    assert result.outputs[0].path.exists()


def test_500_then_success(runway, runway_sim, make_run, input_image):
    runway_sim.configure(fail_500=1)
    result = runway.run(input_image, spec_for(runway), make_run().ctx())
    stats = runway_sim.stats()
    assert stats["faults_served"]["500"] == 1
    assert stats["tasks_created"] == 1
    assert result.outputs[0].path.exists()


def test_5xx_while_polling_is_retried(runway, runway_sim, make_run, input_image):
    runway_sim.configure(fail_500=2, fault_methods=["GET"])
    result = runway.run(input_image, spec_for(runway), make_run().ctx())
    assert runway_sim.stats()["faults_served"]["500"] == 2
    assert result.outputs[0].path.exists()


def test_failed_task_is_fatal_with_its_code(runway, runway_sim, make_run, input_image):
    runway_sim.configure(fail_code="SAFETY.INPUT.IMAGE", fail_message="The image did not pass moderation.")
    with pytest.raises(FatalError) as err:
        runway.run(input_image, spec_for(runway), make_run().ctx())
    assert err.value.code == "SAFETY.INPUT.IMAGE"
    assert "SAFETY.INPUT.IMAGE" in str(err.value) and "moderation" in str(err.value)
    assert not err.value.retryable


def test_transient_failure_code_is_retryable(runway, runway_sim, make_run, input_image):
    runway_sim.configure(fail_code="INTERNAL.BAD_OUTPUT.CODE01")
    with pytest.raises(RetryableError) as err:
        runway.run(input_image, spec_for(runway), make_run().ctx())
    assert err.value.code == "INTERNAL.BAD_OUTPUT.CODE01" and err.value.retryable


def test_400_is_fatal_with_the_servers_message(runway, runway_sim, make_run, input_image):
    # Bypasses validate(): a ratio gen4_turbo does not support reaches the server.
    spec = JobSpec(model="gen4_turbo", prompt="x", prompts=[], params={"ratio": "1:1", "duration": 5})
    with pytest.raises(FatalError) as err:
        runway.run(input_image, spec, make_run().ctx())
    assert "HTTP 400" in str(err.value)
    assert "Invalid ratio '1:1' for gen4_turbo" in str(err.value)
    assert runway_sim.stats()["tasks_created"] == 0


def test_cancel_deletes_the_remote_task(runway, runway_sim, make_run, input_image):
    run = make_run(cancel_when=lambda r: any(m and m.startswith("running") for _, m in r.progress))
    with pytest.raises(Cancelled):
        runway.run(input_image, spec_for(runway), run.ctx())
    stats = runway_sim.stats()
    assert stats["deletes"] == 1 and stats["cancelled"] == 1
    [task] = stats["tasks"].values()
    assert task["status"] == "CANCELLED"
    assert stats["output_downloads"] == 0


class WorkerDied(Exception):
    pass


def test_redelivery_resumes_the_same_remote_task(runway, runway_sim, make_run, input_image):
    runway_sim.configure(duration_s=0.4)

    def die_while_running(run, fraction, message):
        if message and message.startswith("running"):
            raise WorkerDied()

    first = make_run(on_progress=die_while_running)
    with pytest.raises(WorkerDied):
        runway.run(input_image, spec_for(runway), first.ctx())
    task_id = first.store[TASK_KEY]

    # The message is delivered again for the same attempt: same remember/recall store.
    second = make_run(store=first.store)
    result = runway.run(input_image, spec_for(runway), second.ctx())
    assert result.meta["remote_id"] == task_id
    assert result.meta["resumed"] is True
    stats = runway_sim.stats()
    assert stats["tasks_created"] == 1
    assert stats["requests"]["POST /v1/image_to_video"] == 1
    assert list(stats["tasks_by_prompt"].values()) == [1]


def test_remembered_task_that_vanished_is_replaced(runway, runway_sim, make_run, input_image):
    run = make_run(store={TASK_KEY: "00000000-0000-0000-0000-000000000000"})
    result = runway.run(input_image, spec_for(runway), run.ctx())
    assert result.meta["resumed"] is False
    assert run.store[TASK_KEY] == result.meta["remote_id"]
    assert runway_sim.stats()["tasks_created"] == 1


def test_lost_post_answer_is_not_resent(runway, runway_sim, make_run, input_image):
    runway_sim.configure(slow_s=1.0, slow_count=1, fault_methods=["POST"])
    runway.request_timeout_s = 0.3
    run = make_run()
    with pytest.raises(RetryableError) as err:
        runway.run(input_image, spec_for(runway), run.ctx())
    assert err.value.code == "no_answer"
    assert TASK_KEY not in run.store
    time.sleep(1.0)  # the server finishes the slow request
    stats = runway_sim.stats()
    assert stats["requests"]["POST /v1/image_to_video"] == 1
    assert stats["tasks_created"] == 1


def test_persistent_429_gives_up_retryably(runway, runway_sim, make_run, input_image):
    runway_sim.configure(fail_429=100)
    runway.max_retries = 3
    with pytest.raises(RetryableError) as err:
        runway.run(input_image, spec_for(runway), make_run().ctx())
    assert err.value.code == "http_429"
    assert runway_sim.stats()["faults_served"]["429"] == 4
    assert runway_sim.stats()["tasks_created"] == 0


def test_connection_refused_is_retried_then_retryable(make_run, input_image):
    from providers.runway import RunwayProvider
    from providers.runway_sim import RunwaySimServer

    server = RunwaySimServer()
    url = server.start()
    server.stop()  # nothing listens on that port any more
    provider = RunwayProvider(url, "k", poll_interval_s=0.01, backoff_base_s=0.01, max_retries=2)
    with pytest.raises(RetryableError) as err:
        provider.run(input_image, spec_for(provider), make_run().ctx())
    assert err.value.code == "connection"


def test_missing_api_key_is_fatal(runway_sim, make_run, input_image):
    from providers.runway import RunwayProvider

    provider = RunwayProvider(runway_sim.base_url, None)
    with pytest.raises(FatalError) as err:
        provider.run(input_image, spec_for(provider), make_run().ctx())
    assert err.value.code == "no_api_key"


def test_simulator_checks_auth_and_version(runway_sim):
    url = runway_sim.base_url + "/v1/image_to_video"
    body = {
        "model": "gen4_turbo",
        "promptImage": "https://example.com/a.png",
        "ratio": "1280:720",
        "duration": 5,
    }
    assert requests.post(url, json=body, headers={"X-Runway-Version": API_VERSION}).status_code == 401
    no_version = requests.post(url, json=body, headers={"Authorization": "Bearer k"})
    assert no_version.status_code == 400 and "X-Runway-Version" in no_version.json()["error"]
    bad_image = requests.post(
        url,
        json={**body, "promptImage": "ftp://nope"},
        headers={"Authorization": "Bearer k", "X-Runway-Version": API_VERSION},
    )
    assert bad_image.status_code == 400 and bad_image.json()["issues"][0]["path"] == ["promptImage"]
    assert runway_sim.stats()["tasks_created"] == 0


def test_large_images_are_recompressed_under_the_limit(tmp_path):
    import numpy as np
    from PIL import Image

    path = tmp_path / "noisy.png"
    Image.fromarray((np.random.default_rng(1).random((600, 800, 3)) * 255).astype("uint8")).save(path)
    assert path.stat().st_size > 1_000_000
    uri = image_data_uri(path, limit=200_000)
    assert uri.startswith("data:image/jpeg;base64,") and len(uri) <= 200_000
    small = image_data_uri(path)  # under 5 MB: sent as is
    assert small.startswith("data:image/png;base64,")
    assert base64.b64decode(small.split(",", 1)[1]) == path.read_bytes()


def test_unreadable_input_is_fatal(runway, runway_sim, make_run, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(FatalError) as err:
        runway.run(bad, spec_for(runway), make_run().ctx())
    assert err.value.code == "bad_input"
    assert runway_sim.stats()["tasks_created"] == 0


def test_task_id_that_cannot_be_remembered_is_cancelled(runway, runway_sim, make_run, input_image):
    run = make_run()
    ctx = run.ctx()

    def broken_remember(key, value):
        raise ConnectionError("redis is down")

    ctx.remember = broken_remember
    with pytest.raises(RetryableError) as err:
        runway.run(input_image, spec_for(runway), ctx)
    assert err.value.code == "remember"
    stats = runway_sim.stats()
    assert stats["tasks_created"] == 1 and stats["cancelled"] == 1


def test_recorded_cost_is_what_the_task_reports(runway, runway_sim, make_run, input_image):
    # Runway's final cost may differ from the price list: the task's `cost` is what gets recorded.
    runway_sim.configure(charge_credits=7)
    result = runway.run(input_image, spec_for(runway, duration=5), make_run().ctx())
    assert result.meta["credits"] == 7 and result.meta["cost_usd"] == pytest.approx(0.07)
    assert result.meta["cost_source"] == "runway"


@pytest.mark.parametrize(("audio", "credits"), [(True, 4 * 40), (False, 4 * 20)])
def test_veo_audio_is_sent_and_priced(runway, runway_sim, make_run, input_image, audio, credits):
    spec = spec_for(runway, model="veo3.1", duration=4, audio=audio)
    result = runway.run(input_image, spec, make_run().ctx())
    task = runway_sim.stats()["tasks"][result.meta["remote_id"]]
    assert task["audio"] is audio and result.meta["audio"] is audio
    assert result.meta["credits"] == credits == task["credits"]
    [info] = [m for m in runway.models() if m.name == "veo3.1"]
    per_second = (
        info.constraints["credits_per_second"]
        if audio
        else info.constraints["credits_per_second_without_audio"]
    )
    assert per_second * 4 == credits


def test_audio_is_offered_only_where_runway_takes_it(runway):
    assert "audio" in {p.name for p in runway.params("veo3.1_fast")}
    assert "audio" not in {p.name for p in runway.params("gen4_turbo")}
    with pytest.raises(ParamError) as err:
        runway.validate("gen4.5", "p", None, {"audio": False})
    assert err.value.field == "params.audio"


def test_gen45_needs_a_prompt_and_gets_it(runway, runway_sim, make_run, input_image):
    for empty in (None, "", "   "):
        with pytest.raises(ParamError) as err:
            runway.validate("gen4.5", empty, None, {})
        assert err.value.field == "prompt"
    result = runway.run(
        input_image, spec_for(runway, model="gen4.5", prompt="waves roll in"), make_run().ctx()
    )
    assert runway_sim.stats()["tasks"][result.meta["remote_id"]]["promptText"] == "waves roll in"


def test_prompt_length_is_counted_in_utf16_code_units(runway):
    # Runway counts UTF-16 code units: an emoji outside the BMP counts 2.
    assert runway.validate("gen4_turbo", "a" * 998 + "\U0001f600", None, {}).prompt
    with pytest.raises(ParamError) as err:
        runway.validate("gen4_turbo", "a" * 999 + "\U0001f600", None, {})
    assert err.value.field == "prompt" and "1001" in str(err.value)


@pytest.mark.parametrize(
    ("url", "fetchable"),
    [
        ("https://bucket.s3.eu-west-1.amazonaws.com/inputs/a.png?X-Amz-Signature=abc", True),
        ("http://bucket.s3.amazonaws.com/inputs/a.png", False),
        ("https://127.0.0.1:9000/inputs/a.png", False),
        ("https://[::1]/inputs/a.png", False),
        ("https://minio:9000/inputs/a.png", False),
        ("https://storage.example.com/" + "a" * 2048, False),
        (None, False),
    ],
)
def test_image_urls_runway_would_fetch(url, fetchable):
    assert fetchable_by_runway(url) is fetchable


def test_an_input_url_runway_cannot_fetch_is_sent_inline(runway, runway_sim, make_run, input_image):
    # An HTTPS URL on an IP address is refused by Runway (400): the image goes as a data URI instead.
    run = make_run(input_url="https://127.0.0.1:9/inputs/a.png?sig=x")
    result = runway.run(input_image, spec_for(runway), run.ctx())
    assert result.outputs[0].path.stat().st_size > 0
    assert runway_sim.stats()["tasks_created"] == 1


def test_simulator_refuses_plain_http_and_ip_image_urls(runway_sim):
    url = runway_sim.base_url + "/v1/image_to_video"
    headers = {"Authorization": "Bearer k", "X-Runway-Version": API_VERSION}
    body = {"model": "gen4_turbo", "ratio": "1280:720", "duration": 5}
    for image in ("http://example.com/a.png", "https://192.0.2.7/a.png"):
        answer = requests.post(url, json={**body, "promptImage": image}, headers=headers)
        assert answer.status_code == 400 and answer.json()["issues"][0]["path"] == ["promptImage"]
    assert runway_sim.stats()["tasks_created"] == 0
