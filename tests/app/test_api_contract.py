"""The API's request models refuse what the API refuses, naming the field; the serializers answer
what the response models (and so the generated document) say."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from app.contract import api as contract
from app.errors import InvalidInput
from app.models import Item, Job, WebhookDelivery
from app.serializers import delivery_json, item_json, job_json


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"inputs": []}, "inputs", "empty"),
        ({"inputs": "K"}, "inputs", "must be a list"),
        ({"inputs": [7]}, "inputs[0]", "storage key"),
        ({"inputs": ["K", {"key": "K", "prompt": 5}]}, "inputs[1].prompt", "must be a string"),
        ({"inputs": [{"prompt": "a cat"}]}, "inputs[0].key", "required"),
        ({"inputs": [{"key": "K", "bogus": 1}]}, "inputs[0].bogus", "unknown field"),
        ({"inputs": [{"key": "K", "prompts": ["a", 3]}]}, "inputs[0].prompts[1]", "must be a string"),
        ({"inputs": ["K"], "priority": "urgent"}, "priority", "'low', 'normal' or 'high'"),
        ({"inputs": ["K"], "max_concurrency": 0}, "max_concurrency", "at least 1"),
        ({"inputs": ["K"], "max_concurrency": True}, "max_concurrency", "whole number"),
        ({"inputs": ["K"], "params": [1]}, "params", "must be an object"),
        ({"provider": {"echo": 1}}, "provider", "must be a string"),
        ({"provider": None}, "provider", "must be a string"),
        ({"inputs": ["K"], "webhook_events": ["job.exploded"]}, "webhook_events[0]", "must be one of"),
        ({"inputs": ["K"], "idempotency_key": "k" * 201}, "idempotency_key", "at most 200"),
        ({"inputs": ["K"], "sneaky": 1}, "sneaky", "unknown field"),
    ],
)
def test_a_new_job_body_the_model_refuses_names_the_field(body: dict, field: str, words: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        contract.parse(contract.NewJob, body)
    assert refused.value.field == field
    assert words in refused.value.message


def test_a_new_job_body_keeps_exactly_what_was_sent() -> None:
    body = {"inputs": ["a.png", {"key": "b.png", "seed": 3, "params": {"x": 1}}], "prompt": None}
    assert contract.parse(contract.NewJob, body).model_dump(exclude_unset=True) == body


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"files": []}, "files"),
        ({"files": [{"name": "a.png", "size": 1, "content_type": "image/png"}] * 1001}, "files"),
        ({"files": [{"size": 3, "content_type": "image/png"}]}, "files[0].name"),
        ({"files": [{"name": " ", "size": 3, "content_type": "image/png"}]}, "files[0].name"),
        ({"files": [{"name": "a.gif", "size": 3, "content_type": "image/gif"}]}, "files[0].content_type"),
        ({"files": [{"name": "a.png", "size": "3", "content_type": "image/png"}]}, "files[0].size"),
    ],
)
def test_a_presign_body_the_model_refuses_names_the_field(body: dict, field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        contract.parse(contract.PresignRequest, body)
    assert refused.value.field == field and field in refused.value.message


def _schema(model: type) -> Draft202012Validator:
    return Draft202012Validator(model.model_json_schema())


def _job(**overrides: Any) -> Job:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    fields: dict[str, Any] = {
        "id": "7d0b3f5e-9a43-4a55-9c1e-0f0c2e7b9a11",
        "status": "running",
        "provider": "echo",
        "model": "echo-1",
        "prompt": "a cat",
        "prompts": [],
        "params": {"delay_s": 0},
        "priority": "normal",
        "total": 2,
        "created_at": now,
        "started_at": now,
        "waiting_reason": None,
        "routed_from": None,
        "webhook_events": None,
        "max_concurrency": None,
        **{f"n_{s}": 0 for s in ("pending", "queued", "running", "succeeded", "failed", "cancelled")},
        "n_running": 1,
        "n_failed": 1,
    }
    fields.update(overrides)
    return Job(**fields)


def _item(job: Job, **overrides: Any) -> Item:
    fields: dict[str, Any] = {
        "id": "5b8e1c52-0d0f-4b57-8f2a-3c1d8e0a7f42",
        "job_id": job.id,
        "idx": 0,
        "input_key": "inputs/aa/cat.png",
        "status": "failed",
        "attempt": 2,
        "max_attempts": 3,
        "progress": 0.5,
        "error": "boom",
        "error_code": "provider_error",
        "meta": {
            "legend": [
                {
                    "concept": "cat",
                    "instances": 1,
                    "colour": "#ff0000",
                    "role": "mask_cat",
                    "layer_role": None,
                }
            ]
        },
        "queue": "echo",
        "duration_ms": 12.5,
        "created_at": datetime(2026, 1, 2, 3, 4, 5),
    }
    fields.update(overrides)
    item = Item(**fields)
    item.job = job
    return item


def test_a_job_and_its_items_serialize_as_the_document_says() -> None:
    job = _job()
    assert list(_schema(contract.Job).iter_errors(job_json(job))) == []
    data = job_json(job, [_item(job)])
    data.update(items_offset=0, items_next_offset=None)
    assert list(_schema(contract.JobWithItems).iter_errors(data)) == []
    contract.JobWithItems.model_validate(data)


def test_a_field_the_serializer_adds_without_the_model_is_caught() -> None:
    data = {**job_json(_job()), "surprise": 1}
    assert [e.validator for e in _schema(contract.Job).iter_errors(data)] == ["additionalProperties"]


def test_a_webhook_delivery_serializes_as_the_document_says() -> None:
    delivery = WebhookDelivery(
        id=3,
        msg_id="msg_1",
        event="job.completed",
        item_id=None,
        url="https://example.com/hook",
        status="pending",
        attempts=1,
        last_status_code=500,
        last_latency_ms=12.0,
        created_at=datetime(2026, 1, 2, tzinfo=UTC),
    )
    assert list(_schema(contract.WebhookDelivery).iter_errors(delivery_json(delivery))) == []
    assert list(_schema(contract.Item).iter_errors(item_json(_item(_job()), job=_job()))) == []


def test_the_upload_models_take_as_many_files_as_the_upload_service() -> None:
    from app.services import uploads

    files = contract.PresignRequest.model_json_schema()["properties"]["files"]
    keys = contract.CompleteRequest.model_json_schema()["properties"]["keys"]
    assert files["maxItems"] == uploads.MAX_PRESIGN_FILES
    assert keys["maxItems"] == uploads.MAX_COMPLETE_KEYS
    assert set(uploads.UPLOAD_CONTENT_TYPES) == set(contract.UploadContentType.__args__)
