"""Prompts files: a CSV or JSONL of a prompt (and parameters) per image, kept for `prompts_file`.

A script that has no storage credentials uploads its prompts file here, then names the key it
gets back in `POST /jobs` (`"prompts_file": KEY`, with `inputs` or `inputs_prefix`).
"""

from __future__ import annotations

from flask import Response, g, jsonify, request

from app.errors import InvalidInput
from app.images import clean_filename
from app.services import intake
from web.api import bp
from web.errors import ApiError


@bp.post("/prompt-files")
def upload_prompts_file() -> tuple[Response, int]:
    f = request.files.get("file")
    if f is None:
        raise ApiError(400, "missing_file", "send the CSV or JSONL file as multipart field 'file'", "file")
    data = f.read(intake.MAX_PROMPTS_FILE_BYTES + 1)
    if len(data) > intake.MAX_PROMPTS_FILE_BYTES:
        raise ApiError(413, "too_large", f"at most {intake.MAX_PROMPTS_FILE_BYTES // 2**20} MiB", "file")
    name = clean_filename(f.filename) or "prompts.csv"
    try:
        rows = intake.parse_prompts(data, name)
    except InvalidInput as exc:
        raise InvalidInput("file", exc.message) from None
    key = intake.store_prompts_file(data, name, g.user.id)
    return jsonify({"key": key, "filename": name, "rows": len(rows), "names": sorted(rows)[:20]}), 201
