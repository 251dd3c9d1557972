"""The OpenAPI 3.1 description of /api/v1 (served at /api/v1/openapi.json).

Every body's schema is generated from the models in app/contract/api.py, the same models the views
parse requests with; this module adds what only HTTP knows: paths, parameters, statuses, content
types, headers and security. The deployment's own limits (upload size, URL lifetime, items per
job) are written into the schemas when the document is served.
"""

from __future__ import annotations

import copy
import functools
import re
from typing import Any, get_args

from pydantic.json_schema import models_json_schema

from app.config import settings
from app.contract import api as contract

REF = "#/components/schemas/{model}"
STATUSES = list(get_args(contract.ItemStatus))
JOB_STATUSES = list(get_args(contract.JobStatus))


@functools.cache
def _model_schemas() -> dict[str, Any]:
    """Every request and response model, with what they refer to, as components."""
    models = [(m, "validation") for m in (*contract.REQUEST_MODELS, *contract.RESPONSE_MODELS)]
    _, top = models_json_schema(models, ref_template=REF)  # type: ignore[arg-type]
    return top["$defs"]


def schemas() -> dict[str, Any]:
    """The components' schemas, with this deployment's limits."""
    s = settings()
    out = copy.deepcopy(_model_schemas())
    out["PresignFile"]["properties"]["size"]["maximum"] = s.max_upload_bytes
    out["PresignRequest"]["properties"]["expires_in"]["maximum"] = s.upload_url_ttl_s
    inputs = out["NewJob"]["properties"]["inputs"]
    for branch in inputs.get("anyOf", [inputs]):
        if branch.get("type") == "array":
            branch["maxItems"] = s.max_items_per_job
    return out


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _json(name: str, description: str = "OK", headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": _ref(name)}},
    }
    if headers:
        out["headers"] = headers
    return out


ERRORS = {
    400: "Invalid input: `invalid_parameter` names the field; `invalid_json` when the body is not a JSON object",
    401: "Missing, invalid or revoked token",
    403: "Not allowed: `read_only_token` (a read-only token writes nothing), or `forbidden` (another "
    "user's job, or an admin-only action)",
    404: "Unknown id",
    409: "Conflict with the resource's state",
    413: "Too large (a JSON body over MAX_JSON_BYTES, an upload over MAX_UPLOAD_BYTES)",
    414: "The request URI is longer than MAX_URI_BYTES",
    503: "The database or the broker is unreachable; nothing was changed: try again shortly",
}


def _errors(*codes: int, **described: str) -> dict[str, Any]:
    out = {str(c): _json("Error", ERRORS[c]) for c in codes}
    for code, text in described.items():
        out[code.removeprefix("s")] = _json("Error", text)
    return out


def _json_body(name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(name)}}}


BINARY = {"type": "string", "format": "binary"}


def _multipart(fields: dict[str, Any], required: list[str]) -> dict[str, Any]:
    schema = {"type": "object", "properties": fields, "required": required}
    return {"required": True, "content": {"multipart/form-data": {"schema": schema}}}


def _path(name: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema or {"type": "string"}}


def _query(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


WAIT_NOTE = (
    "With `Prefer: wait=N` (N up to 60) the answer comes when the job has finished or after N "
    "seconds, whichever is first, with `Preference-Applied: wait=N`; N above 60 is treated as 60."
)
PREFERENCE_APPLIED = {
    "Preference-Applied": {
        "description": "`wait=N` when the request asked `Prefer: wait=N`",
        "schema": {"type": "string", "pattern": "^wait=[0-9]+$"},
    }
}
ACCESS_NOTE = (
    "Every user reads every job. Members submit jobs and change (cancel, retry, pause, resume, "
    "PATCH, redeliver) their own; admins change every job and pause queues. A read-only token "
    '(scope `read`) may only GET. Errors are JSON: `{"error": {"code", "message", "field"?}}`.'
)


def _event_stream(*events: str) -> dict[str, Any]:
    """An event stream; its schema describes one event, as Open API 3.1 reads `text/event-stream`."""
    event = {
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"enum": list(events)},
            "data": {"type": "string", "contentMediaType": "application/json"},
            "id": {"type": "string", "pattern": "^[0-9]+$", "description": "the newest event-log id sent"},
            "retry": {"type": "integer", "minimum": 0},
        },
    }
    return {"description": "an event stream", "content": {"text/event-stream": {"schema": event}}}


def _finish(method: str, op: dict[str, Any]) -> dict[str, Any]:
    """The errors every operation of its kind can answer, added to those it names itself."""
    params = op.get("parameters", [])
    codes = {401, 503}
    if params or "requestBody" in op:
        codes.add(400)  # a malformed value, or text the database cannot hold (NUL)
    if params:
        codes.add(414)
    if "requestBody" in op:
        codes.add(413)
    if method != "get":
        codes.add(403)
    if any(p["in"] == "path" for p in params):
        codes.add(404)
    for code, response in _errors(*sorted(codes)).items():
        op["responses"].setdefault(code, response)
    op["responses"] = dict(sorted(op["responses"].items()))
    return op


def spec() -> dict[str, Any]:
    job_id = [_path("job_id")]
    item_id = [_path("item_id")]
    queue = [_path("name", {"type": "string"})]
    paths: dict[str, dict[str, Any]] = {
        "/prompt-files": {
            "post": {
                "summary": "Store a prompts file (CSV or JSONL) for POST /jobs `prompts_file`",
                "description": "CSV: a header with a `file`, `name` or `key` column and `prompt`; `prompts` "
                "(SAM3 concepts, `;`-separated), `negative_prompt`, `seed` and any other column are "
                "parameters. JSONL: one object per line with the same fields (`params` an object). "
                "Checked here; an error names the line.",
                "requestBody": _multipart({"file": BINARY}, ["file"]),
                "responses": {"201": _json("PromptsFileStored", "Stored")},
            }
        },
        "/uploads": {
            "post": {
                "summary": "Upload one or many images",
                "requestBody": _multipart(
                    {"files": {"type": "array", "items": BINARY, "minItems": 1}}, ["files"]
                ),
                "responses": {"201": _json("Uploaded", "Stored")},
            }
        },
        "/uploads/presign": {
            "post": {
                "summary": "Presigned PUT URLs for uploading images straight to storage",
                "description": (
                    "Step 1 of a direct upload (for many or large files; the multipart POST /uploads "
                    "is simpler for a few). Answers one upload per file, in request order: PUT the "
                    "file's bytes to `url` with exactly `headers` (the body must be exactly `size` "
                    "bytes; clients set Content-Length themselves) before `expires_at`, then pass "
                    "the keys to POST /uploads/complete. A URL is good for its one key, content type "
                    "and size; a PUT after it expired is refused (403)."
                ),
                "requestBody": _json_body("PresignRequest"),
                "responses": {"200": _json("Presigned")},
            }
        },
        "/uploads/complete": {
            "post": {
                "summary": "Check and keep images uploaded through presigned URLs",
                "description": (
                    "Step 2 of a direct upload. Each key (from POST /uploads/presign, by this user) is "
                    "checked as a multipart upload is (size, PNG/JPEG/WEBP, pixel limits) and kept as an "
                    "asset under its content-addressed `inputs/...` key with the name given at presign. "
                    "What fails is deleted from storage and listed in `rejected` (code `not_found`, "
                    "`too_large` or `invalid_image`). Completing a key again answers the same asset. A "
                    "key presigned for another user refuses the whole request (403) and changes nothing."
                ),
                "requestBody": _json_body("CompleteRequest"),
                "responses": {"200": _json("Completed")},
            }
        },
        "/assets": {
            "get": {
                "summary": "Browse stored inputs by prefix",
                "parameters": [
                    _query("prefix", {"type": "string"}, "default: inputs/"),
                    _query("cursor", {"type": "string"}),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
                ],
                "responses": {"200": _json("AssetList")},
            }
        },
        "/jobs": {
            "post": {
                "summary": "Submit a job: one item per input",
                "description": WAIT_NOTE,
                "requestBody": _json_body("NewJob"),
                "responses": {
                    "201": _json("Job", "Created", PREFERENCE_APPLIED),
                    "200": _json("Job", "Same idempotency key and body: the first job", PREFERENCE_APPLIED),
                    **_errors(s409="the idempotency key was used before with another body"),
                },
            },
            "get": {
                "summary": "List jobs, newest first",
                "parameters": [
                    _query("status", {"enum": JOB_STATUSES}),
                    _query("provider", {"type": "string"}),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 500}),
                    _query("cursor", {"type": "string"}, "`next_cursor` of the previous page"),
                ],
                "responses": {"200": _json("JobList")},
            },
        },
        "/jobs/{job_id}": {
            "get": {
                "summary": "A job with its items (paged with items_offset / items_limit)",
                "description": WAIT_NOTE,
                "parameters": [
                    *job_id,
                    _query(
                        "items_limit", {"type": "integer", "minimum": 0, "maximum": 10000, "default": 100}
                    ),
                    _query("items_offset", {"type": "integer", "minimum": 0, "maximum": 10_000_000}),
                    _query("item_status", {"enum": STATUSES}),
                ],
                "responses": {"200": _json("JobWithItems", headers=PREFERENCE_APPLIED)},
            },
            "patch": {
                "summary": "Change a job's priority and/or max_concurrency while it runs",
                "parameters": job_id,
                "requestBody": _json_body("JobChange"),
                "responses": {"200": _json("Job")},
            },
        },
        "/jobs/{job_id}/stream": {
            "get": {
                "summary": "Live job updates as Server-Sent Events, until the job finishes",
                "description": "Events: `job` (the job as GET /jobs/{id} shows it; on connect with the "
                "window's items), `items` (items of the window that changed), `progress` (running items' "
                "progress, about once a second). Each `id:` is the newest event-log id sent: reconnect "
                "with `Last-Event-ID` (or `last_event_id`) to get only what changed since. The stream "
                "ends after the final snapshot, or after STREAM_MAX_S (EventSource reconnects).",
                "parameters": [
                    *job_id,
                    _query("items_offset", {"type": "integer", "minimum": 0, "maximum": 10_000_000}),
                    _query("items_limit", {"type": "integer", "minimum": 0, "maximum": 10000}),
                    _query("last_event_id", {"type": "integer", "minimum": 0}),
                ],
                "responses": {"200": _event_stream("job", "items", "progress")},
            }
        },
        "/stream": {
            "get": {
                "summary": "Server-Sent Events naming the jobs whose counts or status changed",
                "description": '`changed` events (`{"jobs": [ids], "count": n}`, at most about one a '
                "second) and keep-alive comments; for pages and tools that show many jobs.",
                "responses": {"200": _event_stream("changed")},
            }
        },
        "/jobs/{job_id}/events": {
            "get": {
                "summary": "The job's event log",
                "parameters": [
                    *job_id,
                    _query("after", {"type": "integer", "minimum": 0, "maximum": 2**62}),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
                ],
                "responses": {"200": _json("EventList")},
            }
        },
        "/jobs/{job_id}/cancel": {
            "post": {
                "summary": "Cancel unfinished items",
                "parameters": job_id,
                "responses": {"200": _json("Cancelled")},
            }
        },
        "/jobs/{job_id}/pause": {
            "post": {
                "summary": "Pause a job: queued items come back out of the broker, running ones finish, "
                "no new item starts (status `paused`)",
                "parameters": job_id,
                "responses": {"200": _json("Paused"), **_errors(s409="the job has finished")},
            }
        },
        "/jobs/{job_id}/resume": {
            "post": {
                "summary": "Resume a paused job",
                "parameters": job_id,
                "responses": {"200": _json("Resumed")},
            }
        },
        "/jobs/{job_id}/retry": {
            "post": {
                "summary": "Retry failed items",
                "parameters": job_id,
                "responses": {"200": _json("Retried")},
            }
        },
        "/jobs/{job_id}/download": {
            "get": {
                "summary": "Outputs as a zip (streamed), named after the inputs, with manifest.csv",
                "parameters": [
                    *job_id,
                    {
                        **_query(
                            "items",
                            {"type": "array", "items": {"type": "string"}, "minItems": 1},
                            "item ids, comma-separated (or the parameter repeated): only those items",
                        ),
                        "style": "form",
                        "explode": True,
                    },
                ],
                "responses": {
                    "200": {
                        "description": "zip",
                        "headers": {
                            "Content-Disposition": {
                                "required": True,
                                "description": 'attachment; filename="job-<id>.zip"',
                                "schema": {"type": "string"},
                            }
                        },
                        "content": {"application/zip": {"schema": BINARY}},
                    }
                },
            }
        },
        "/jobs/{job_id}/webhooks": {
            "get": {
                "summary": "The job's webhook deliveries, oldest first, with how each went",
                "parameters": [
                    *job_id,
                    _query("after", {"type": "integer", "minimum": 0, "maximum": 2**62}),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
                ],
                "responses": {"200": _json("WebhookDeliveries")},
            }
        },
        "/jobs/{job_id}/webhooks/{delivery_id}/redeliver": {
            "post": {
                "summary": "Send a delivery again now (same webhook-id), with a fresh round of retries",
                "parameters": [*job_id, _path("delivery_id", {"type": "integer", "minimum": 0})],
                "responses": {"200": _json("WebhookDelivery")},
            }
        },
        "/account": {
            "get": {
                "summary": "The token's user and the secret that signs their webhook deliveries",
                "responses": {"200": _json("Account")},
            }
        },
        "/account/webhook-secret": {
            "post": {
                "summary": "Rotate the webhook signing secret (the previous one also signs for 24 hours)",
                "responses": {"200": _json("Account")},
            }
        },
        "/items/{item_id}": {
            "get": {"summary": "One item", "parameters": item_id, "responses": {"200": _json("Item")}}
        },
        "/items/{item_id}/retry": {
            "post": {
                "summary": "Retry a failed or cancelled item",
                "parameters": item_id,
                "responses": {
                    "200": _json("Item"),
                    **_errors(s409="the item is not failed or cancelled, or changed state meanwhile"),
                },
            }
        },
        "/stats": {"get": {"summary": "Item counts per provider", "responses": {"200": _json("Stats")}}},
        "/queues": {
            "get": {
                "summary": "Per queue: messages in the broker's window (`waiting`), items pending in the "
                "database, the window's target, whether it is paused, running items, workers online with "
                "the state of each device (loading, ready, broken, draining); control: reports waiting",
                "responses": {"200": _json("Queues")},
            }
        },
        "/queues/{name}/pause": {
            "post": {
                "summary": "Pause a queue for maintenance (admins): its workers stay up, running items "
                "finish, no new item reaches them",
                "parameters": queue,
                "responses": {"200": _json("QueuePaused")},
            }
        },
        "/queues/{name}/resume": {
            "post": {
                "summary": "Resume a paused queue (admins)",
                "parameters": queue,
                "responses": {"200": _json("QueuePaused")},
            }
        },
        "/providers": {
            "get": {
                "summary": "Providers, their models and parameter schemas",
                "responses": {"200": _json("Providers")},
            }
        },
    }
    for operations in paths.values():
        for method, operation in operations.items():
            _finish(method, operation)
    return {
        "openapi": "3.1.0",
        "info": {"title": "bulkgen API", "version": "1", "description": ACCESS_NOTE},
        "servers": [{"url": "/api/v1"}],
        "components": {
            "schemas": schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }


@functools.cache
def _query_parameters() -> dict[tuple[str, str], dict[str, Any]]:
    paths = spec()["paths"]
    return {
        (path, method): {p["name"]: p["schema"] for p in op.get("parameters", []) if p["in"] == "query"}
        for path, operations in paths.items()
        for method, op in operations.items()
    }


def query_parameters(rule: str, method: str) -> dict[str, Any] | None:
    """The query parameters the document lists for a Flask URL rule (name -> schema); None where it
    does not describe the operation."""
    path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule).removeprefix("/api/v1")
    return _query_parameters().get((path, method.lower()))
