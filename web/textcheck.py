"""Refuse request text that the database cannot store, before any handler sees it.

PostgreSQL text cannot hold NUL (legal in JSON as \\u0000, and in a form or query string as %00): it
would otherwise surface as a 500 from deep inside a query. (Lone surrogates never get this far: the JSON
parser refuses them and form decoding replaces them.)"""

from __future__ import annotations

from typing import Any

from flask import Flask, request
from werkzeug.exceptions import BadRequest


def unstorable(value: Any, where: str) -> str | None:
    """Where in `value` (a parsed JSON value or a string) a string the database cannot store sits."""
    if isinstance(value, str):
        return f"{where} contains a NUL character" if "\x00" in value else None
    if isinstance(value, dict):
        for key, inner in value.items():
            problem = unstorable(key, f"a key of {where}") or unstorable(inner, f"{where}.{key}")
            if problem:
                return problem
    elif isinstance(value, list):
        for n, inner in enumerate(value):
            if problem := unstorable(inner, f"{where}[{n}]"):
                return problem
    return None


def _check_request() -> None:
    problem = unstorable(dict(request.view_args or {}), "the path") or unstorable(
        request.args.to_dict(flat=False), "the query"
    )
    # A signed PUT to /files carries an object's bytes, stored as they are (and streamed: not parsed).
    if problem is None and request.method in ("POST", "PUT", "PATCH") and request.blueprint != "files":
        if request.is_json:
            problem = unstorable(request.get_json(silent=True), "the body")
        elif request.mimetype == "application/x-www-form-urlencoded":
            # Multipart bodies are uploads (files only, checked as images), left to the upload view,
            # which runs after authentication: no reason to parse one for an anonymous caller here.
            problem = unstorable(request.form.to_dict(flat=False), "the form")
    if problem is not None:
        # The app's HTTP error handling answers JSON to API callers and an error page to browsers.
        raise BadRequest(description=problem)


def init_app(flask_app: Flask) -> None:
    flask_app.before_request(_check_request)
