"""The OpenAPI 3.1 description of /api/v1 (served at /api/v1/openapi.json)."""

from __future__ import annotations

from typing import Any

STATUSES = ["pending", "queued", "running", "succeeded", "failed", "cancelled"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    words = {
        400: "Invalid input",
        401: "Missing or invalid token",
        403: "Not allowed",
        404: "Unknown id",
        409: "Conflict",
        413: "Too large",
    }
    return {str(c): _json(_ref("Error"), words[c]) for c in codes}


BINARY = {"type": "string", "format": "binary"}


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    """A required JSON request body."""
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _multipart(fields: dict[str, Any]) -> dict[str, Any]:
    """A required multipart/form-data body with these fields."""
    return {
        "required": True,
        "content": {"multipart/form-data": {"schema": {"type": "object", "properties": fields}}},
    }


def _id_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _query(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


NULLABLE_STR = {"type": ["string", "null"]}
WAIT_NOTE = (
    "With `Prefer: wait=N` (N up to 60) the answer comes when the job has finished or after N "
    "seconds, whichever is first, with `Preference-Applied: wait=N`; N above 60 is treated as 60."
)
WEBHOOK_EVENTS = ["item.completed", "item.failed", "job.completed"]
ACCESS_NOTE = (
    "Every user reads every job. Members submit jobs and change (cancel, retry, pause, resume, "
    "PATCH, redeliver) their own; admins change every job and pause queues. A read-only token "
    "(scope `read`) may only GET."
)
REFUSED_WRITE = (
    "Not allowed: `read_only_token` (a read-only token writes nothing), or `forbidden` (another "
    "user's job, or an admin-only action)"
)
TIME = {"type": ["string", "null"], "format": "date-time"}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "field": {"type": "string"},
                },
            }
        },
    },
    "Asset": {
        "type": "object",
        "required": ["key"],
        "properties": {
            "key": {"type": "string"},
            "size": {"type": ["integer", "null"]},
            "content_type": NULLABLE_STR,
            "width": {"type": ["integer", "null"]},
            "height": {"type": ["integer", "null"]},
            "sha256": NULLABLE_STR,
            "filename": NULLABLE_STR,
        },
    },
    "Output": {
        "type": "object",
        "properties": {
            "key": {"type": "string"},
            "url": {"type": "string"},
            "content_type": NULLABLE_STR,
            "role": {
                "type": ["string", "null"],
                "description": "what the file is: wan_local `video` and `poster` (its first frame, PNG); "
                "runway `video`; sam3 `mask_<concept>` (labelled instance mask), `layer_<concept>` "
                "(that concept's instances as a see-through RGBA PNG, only where it found any), "
                "`instances` (JSON) and `preview` (all concepts painted on the input)",
            },
            "size": {"type": ["integer", "null"], "description": "bytes"},
        },
    },
    "LegendEntry": {
        "type": "object",
        "description": "one SAM3 concept of an item: how many instances it found, in which colour",
        "properties": {
            "concept": {"type": "string"},
            "instances": {"type": "integer", "minimum": 0},
            "colour": {"type": "string", "pattern": "^#[0-9a-f]{6}$"},
            "role": {"type": "string", "description": "its mask output"},
            "layer_role": {
                "type": ["string", "null"],
                "description": "its layer output; null when it found no instances",
            },
        },
    },
    "Counts": {"type": "object", "properties": {s: {"type": "integer"} for s in STATUSES}},
    "Item": {
        "type": "object",
        "required": ["id", "input_key", "status", "attempt", "progress", "outputs"],
        "properties": {
            "id": {"type": "string"},
            "input_key": {"type": "string"},
            "prompt": {
                "type": ["string", "null"],
                "description": "what the item runs with: its own, else the job's",
            },
            "prompts": {
                "type": "array",
                "items": {"type": "string"},
                "description": "SAM3 concepts it runs with",
            },
            "params": {
                "type": "object",
                "description": "its own parameters (only those that differ from the job's)",
            },
            "status": {"enum": STATUSES},
            "attempt": {"type": "integer"},
            "progress": {"type": "number", "minimum": 0, "maximum": 1},
            "outputs": {"type": "array", "items": _ref("Output")},
            "error": NULLABLE_STR,
            "worker": NULLABLE_STR,
            "meta": {
                "type": "object",
                "description": "what the provider records about the run: wan_local `width`, `height`, "
                "`num_frames`, `fps`, `seed`...; sam3 `instances` (all concepts), `prompts` and `legend`",
                "properties": {"legend": {"type": "array", "items": _ref("LegendEntry")}},
            },
            "started_at": TIME,
            "finished_at": TIME,
        },
    },
    "Job": {
        "type": "object",
        "required": ["id", "status", "provider", "model", "progress", "counts", "created_at"],
        "properties": {
            "id": {"type": "string"},
            "status": {"enum": ["queued", "running", "paused", "succeeded", "failed", "cancelled"]},
            "provider": {"type": "string"},
            "model": {"type": "string"},
            "progress": {"type": "number", "minimum": 0, "maximum": 1},
            "counts": _ref("Counts"),
            "created_at": TIME,
            "started_at": TIME,
            "finished_at": TIME,
            "webhook": NULLABLE_STR,
            "webhook_events": {"type": "array", "items": {"enum": WEBHOOK_EVENTS}},
            "priority": {"enum": ["low", "normal", "high"]},
            "max_concurrency": {"type": ["integer", "null"], "minimum": 1},
            "paused_at": TIME,
            "items": {"type": "array", "items": _ref("Item")},
        },
    },
    "InputEntry": {
        "type": "object",
        "required": ["key"],
        "additionalProperties": False,
        "properties": {
            "key": {"type": "string"},
            "prompt": {"type": "string"},
            "negative_prompt": {"type": "string", "description": "short for params.negative_prompt"},
            "seed": {"type": "integer", "description": "short for params.seed"},
            "params": {"type": "object"},
            "prompts": {"type": "array", "items": {"type": "string"}, "description": "SAM3 concepts"},
        },
    },
    "NewJob": {
        "type": "object",
        "description": "give `inputs` or `inputs_prefix`",
        "properties": {
            "provider": {"type": "string", "description": "defaults to the deployment's default provider"},
            "model": {"type": "string"},
            "inputs": {
                "type": "array",
                "items": {"oneOf": [{"type": "string"}, _ref("InputEntry")]},
                "minItems": 1,
                "description": "image keys, or objects carrying a prompt (and parameters) per image; an "
                "entry's own values win over the job's, and an error names it (`inputs[3].params.seed`)",
            },
            "inputs_prefix": {
                "type": "string",
                "description": "a folder: every PNG, JPEG or WEBP under it, in key order (instead of inputs)",
            },
            "prompts_file": {
                "type": "string",
                "description": "key of a CSV or JSONL file (POST /prompt-files) mapping file name or key to "
                "prompt and parameters; it fills in what the entries do not say",
            },
            "prompt": {"type": "string"},
            "prompts": {"type": "array", "items": {"type": "string"}, "description": "SAM3 concepts"},
            "params": {"type": "object"},
            "priority": {"enum": ["low", "normal", "high"]},
            "max_concurrency": {
                "type": ["integer", "null"],
                "minimum": 1,
                "description": "most items of this job queued or running at once (default: no cap); "
                "PATCH /jobs/{id} changes it",
            },
            "idempotency_key": {
                "type": "string",
                "maxLength": 200,
                "description": "the same key with the same body returns the first job (200); with another "
                "body, 409 idempotency_conflict",
            },
            "webhook": {
                "type": "string",
                "format": "uri",
                "description": "http(s) URL told about this job's events (Standard Webhooks, signed with "
                "your secret: GET /account); internal addresses are refused",
            },
            "webhook_events": {
                "type": "array",
                "items": {"enum": WEBHOOK_EVENTS},
                "minItems": 1,
                "description": "default: job.completed",
            },
        },
    },
    "WebhookDelivery": {
        "type": "object",
        "required": ["id", "webhook_id", "event", "status", "attempts"],
        "properties": {
            "id": {"type": "integer"},
            "webhook_id": {
                "type": "string",
                "description": "the webhook-id header, the same on every attempt",
            },
            "event": {"enum": WEBHOOK_EVENTS},
            "item_id": NULLABLE_STR,
            "url": {"type": "string"},
            "status": {"enum": ["pending", "delivered", "failed"]},
            "attempts": {"type": "integer"},
            "last_attempt_at": TIME,
            "last_status_code": {"type": ["integer", "null"]},
            "last_error": NULLABLE_STR,
            "last_latency_ms": {"type": ["number", "null"]},
            "next_attempt_at": TIME,
            "created_at": TIME,
            "delivered_at": TIME,
        },
    },
    "Account": {
        "type": "object",
        "required": ["email", "webhook_secret"],
        "properties": {
            "email": {"type": "string"},
            "role": {"enum": ["admin", "member"]},
            "is_admin": {"type": "boolean"},
            "token_scope": {
                "enum": ["write", "read", "session"],
                "description": "the scope of the token the request came with; `session` for the signed-in pages",
            },
            "webhook_secret": {
                "type": "string",
                "description": "whsec_ + base64: verifies webhook signatures",
            },
        },
    },
}


def spec() -> dict[str, Any]:
    job_id = [_id_param("job_id")]
    item_id = [_id_param("item_id")]
    paths: dict[str, Any] = {
        "/prompt-files": {
            "post": {
                "summary": "Store a prompts file (CSV or JSONL) for POST /jobs `prompts_file`",
                "description": "CSV: a header with a `file`, `name` or `key` column and `prompt`; `prompts` "
                "(SAM3 concepts, `;`-separated), `negative_prompt`, `seed` and any other column are "
                "parameters. JSONL: one object per line with the same fields (`params` an object). "
                "Checked here; an error names the line.",
                "requestBody": _multipart({"file": BINARY}),
                "responses": {
                    "201": _json(
                        {
                            "type": "object",
                            "properties": {
                                "key": {"type": "string"},
                                "filename": {"type": "string"},
                                "rows": {"type": "integer"},
                                "names": {"type": "array", "items": {"type": "string"}},
                            },
                        },
                        "Stored",
                    ),
                    **_errors(400, 401, 403, 413),
                },
            }
        },
        "/uploads": {
            "post": {
                "summary": "Upload one or many images",
                "requestBody": _multipart({"files": {"type": "array", "items": BINARY}}),
                "responses": {
                    "201": _json(
                        {
                            "type": "object",
                            "properties": {"assets": {"type": "array", "items": _ref("Asset")}},
                        },
                        "Stored",
                    ),
                    **_errors(400, 401, 413),
                },
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
                "requestBody": _json_body(
                    {
                        "type": "object",
                        "required": ["files"],
                        "properties": {
                            "files": {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": 1000,
                                "items": {
                                    "type": "object",
                                    "required": ["name", "size", "content_type"],
                                    "properties": {
                                        "name": {"type": "string", "maxLength": 1024},
                                        "size": {
                                            "type": "integer",
                                            "minimum": 1,
                                            "description": "bytes; at most MAX_UPLOAD_BYTES",
                                        },
                                        "content_type": {
                                            "type": "string",
                                            "enum": ["image/png", "image/jpeg", "image/webp"],
                                        },
                                    },
                                },
                            },
                            "expires_in": {
                                "type": "integer",
                                "minimum": 1,
                                "description": "seconds the URLs live (default and most: UPLOAD_URL_TTL_S, 900)",
                            },
                        },
                    }
                ),
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "uploads": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "properties": {
                                            "name": {
                                                "type": "string",
                                                "description": "the name as it will be kept (cleaned)",
                                            },
                                            "key": {
                                                "type": "string",
                                                "description": "staging key, for complete",
                                            },
                                            "url": {"type": "string"},
                                            "method": {"type": "string", "enum": ["PUT"]},
                                            "headers": {
                                                "type": "object",
                                                "additionalProperties": {"type": "string"},
                                            },
                                            "expires_at": {"type": "string", "format": "date-time"},
                                        },
                                    },
                                }
                            },
                        }
                    ),
                    **_errors(400, 401),
                },
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
                "requestBody": _json_body(
                    {
                        "type": "object",
                        "required": ["keys"],
                        "properties": {
                            "keys": {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": 100,
                                "items": {"type": "string"},
                            }
                        },
                    }
                ),
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "assets": {
                                    "type": "array",
                                    "items": {
                                        "allOf": [
                                            _ref("Asset"),
                                            {
                                                "type": "object",
                                                "properties": {
                                                    "upload_key": {
                                                        "type": "string",
                                                        "description": "the staging key it was uploaded under",
                                                    }
                                                },
                                            },
                                        ]
                                    },
                                },
                                "rejected": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "properties": {
                                            "key": {"type": "string"},
                                            "name": {"type": "string"},
                                            "code": {
                                                "type": "string",
                                                "enum": ["not_found", "too_large", "invalid_image"],
                                            },
                                            "error": {"type": "string"},
                                        },
                                    },
                                },
                            },
                        }
                    ),
                    **_errors(400, 401, 403),
                },
            }
        },
        "/assets": {
            "get": {
                "summary": "Browse stored inputs by prefix",
                "parameters": [
                    _query("prefix", {"type": "string"}),
                    _query("cursor", {"type": "string"}),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "assets": {"type": "array", "items": _ref("Asset")},
                                "next_cursor": NULLABLE_STR,
                            },
                        }
                    ),
                    **_errors(400, 401),
                },
            }
        },
        "/jobs": {
            "post": {
                "summary": "Submit a job: one item per input",
                "description": WAIT_NOTE,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("NewJob")}},
                },
                "responses": {
                    "201": _json(_ref("Job"), "Created"),
                    "200": _json(_ref("Job"), "Same idempotency key and body: the first job"),
                    **_errors(400, 401, 409, 413),
                },
            },
            "get": {
                "summary": "List jobs, newest first",
                "parameters": [
                    _query("status", {"type": "string"}),
                    _query("provider", {"type": "string"}),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 500}),
                    _query("cursor", {"type": "string"}),
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "jobs": {"type": "array", "items": _ref("Job")},
                                "next_cursor": NULLABLE_STR,
                            },
                        }
                    ),
                    **_errors(400, 401),
                },
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
                    _query("items_offset", {"type": "integer", "minimum": 0}),
                    _query("item_status", {"enum": STATUSES}),
                ],
                "responses": {"200": _json(_ref("Job")), **_errors(400, 401, 404)},
            },
            "patch": {
                "summary": "Change a job's priority and/or max_concurrency while it runs",
                "parameters": job_id,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "priority": {"enum": ["low", "normal", "high"]},
                                    "max_concurrency": {"type": ["integer", "null"], "minimum": 1},
                                },
                            }
                        }
                    },
                },
                "responses": {"200": _json(_ref("Job")), **_errors(400, 401, 404)},
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
                    _query("items_offset", {"type": "integer", "minimum": 0}),
                    _query("items_limit", {"type": "integer", "minimum": 0, "maximum": 10000}),
                    _query("last_event_id", {"type": "integer", "minimum": 0}),
                ],
                "responses": {
                    "200": {"description": "an event stream", "content": {"text/event-stream": {}}},
                    **_errors(400, 401, 404),
                },
            }
        },
        "/stream": {
            "get": {
                "summary": "Server-Sent Events naming the jobs whose counts or status changed",
                "description": '`changed` events (`{"jobs": [ids], "count": n}`, at most about one a '
                "second) and keep-alive comments; for pages and tools that show many jobs.",
                "responses": {
                    "200": {"description": "an event stream", "content": {"text/event-stream": {}}},
                    **_errors(401),
                },
            }
        },
        "/jobs/{job_id}/events": {
            "get": {
                "summary": "The job's event log",
                "parameters": [
                    *job_id,
                    _query("after", {"type": "integer", "minimum": 0}),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
                ],
                "responses": {"200": _json({"type": "object"}), **_errors(400, 401, 404)},
            }
        },
        "/jobs/{job_id}/cancel": {
            "post": {
                "summary": "Cancel unfinished items",
                "parameters": job_id,
                "responses": {"200": _json({"type": "object"}), **_errors(401, 404)},
            }
        },
        "/jobs/{job_id}/pause": {
            "post": {
                "summary": "Pause a job: queued items come back out of the broker, running ones finish, "
                "no new item starts (status `paused`)",
                "parameters": job_id,
                "responses": {"200": _json({"type": "object"}), **_errors(401, 404, 409)},
            }
        },
        "/jobs/{job_id}/resume": {
            "post": {
                "summary": "Resume a paused job",
                "parameters": job_id,
                "responses": {"200": _json({"type": "object"}), **_errors(401, 404)},
            }
        },
        "/jobs/{job_id}/retry": {
            "post": {
                "summary": "Retry failed items",
                "parameters": job_id,
                "responses": {"200": _json({"type": "object"}), **_errors(401, 404)},
            }
        },
        "/jobs/{job_id}/download": {
            "get": {
                "summary": "Outputs as a zip (streamed), named after the inputs, with manifest.csv",
                "parameters": [
                    *job_id,
                    _query(
                        "items",
                        {"type": "string"},
                        "item ids, comma-separated (or the parameter repeated): only those items",
                    ),
                ],
                "responses": {
                    "200": {"description": "zip", "content": {"application/zip": {}}},
                    **_errors(400, 401, 404),
                },
            }
        },
        "/jobs/{job_id}/webhooks": {
            "get": {
                "summary": "The job's webhook deliveries, oldest first, with how each went",
                "parameters": [
                    *job_id,
                    _query("after", {"type": "integer", "minimum": 0}),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "webhook": NULLABLE_STR,
                                "deliveries": {"type": "array", "items": _ref("WebhookDelivery")},
                            },
                        }
                    ),
                    **_errors(400, 401, 404),
                },
            }
        },
        "/jobs/{job_id}/webhooks/{delivery_id}/redeliver": {
            "post": {
                "summary": "Send a delivery again now (same webhook-id), with a fresh round of retries",
                "parameters": [
                    *job_id,
                    {"name": "delivery_id", "in": "path", "required": True, "schema": {"type": "integer"}},
                ],
                "responses": {"200": _json(_ref("WebhookDelivery")), **_errors(401, 404)},
            }
        },
        "/account": {
            "get": {
                "summary": "The token's user and the secret that signs their webhook deliveries",
                "responses": {"200": _json(_ref("Account")), **_errors(401)},
            }
        },
        "/account/webhook-secret": {
            "post": {
                "summary": "Rotate the webhook signing secret (the previous one also signs for 24 hours)",
                "responses": {"200": _json(_ref("Account")), **_errors(401)},
            }
        },
        "/items/{item_id}": {
            "get": {
                "summary": "One item",
                "parameters": item_id,
                "responses": {"200": _json(_ref("Item")), **_errors(401, 404)},
            }
        },
        "/items/{item_id}/retry": {
            "post": {
                "summary": "Retry a failed or cancelled item",
                "parameters": item_id,
                "responses": {"200": _json(_ref("Item")), **_errors(401, 404, 409)},
            }
        },
        "/stats": {
            "get": {
                "summary": "Item counts per provider",
                "responses": {"200": _json({"type": "object"}), **_errors(401)},
            }
        },
        "/queues": {
            "get": {
                "summary": "Per queue: messages in the broker's window (`waiting`), items pending in the "
                "database, the window's target, whether it is paused, running items, workers online with "
                "the state of each device (loading, ready, broken, draining); control: reports waiting",
                "responses": {"200": _json({"type": "object"}), **_errors(401)},
            }
        },
        "/queues/{name}/pause": {
            "post": {
                "summary": "Pause a queue for maintenance: its workers stay up, running items finish, no "
                "new item reaches them",
                "parameters": [_id_param("name")],
                "responses": {"200": _json({"type": "object"}), **_errors(401, 404)},
            }
        },
        "/queues/{name}/resume": {
            "post": {
                "summary": "Resume a paused queue",
                "parameters": [_id_param("name")],
                "responses": {"200": _json({"type": "object"}), **_errors(401, 404)},
            }
        },
        "/providers": {
            "get": {
                "summary": "Providers, their models and parameter schemas",
                "responses": {"200": _json({"type": "object"}), **_errors(401)},
            }
        },
    }
    # Any write may be refused: docs/reliability.md, "Access model".
    for operations in paths.values():
        for method, operation in operations.items():
            if method != "get":
                operation["responses"].setdefault("403", _json(_ref("Error"), REFUSED_WRITE))
    return {
        "openapi": "3.1.0",
        "info": {"title": "bulkgen API", "version": "1", "description": ACCESS_NOTE},
        "servers": [{"url": "/api/v1"}],
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }
