"""JSON errors for the API: {"error": {"code", "message", "field"?}}."""

from __future__ import annotations

from flask import Response, jsonify


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


def error_response(status: int, code: str, message: str, field: str | None = None) -> tuple[Response, int]:
    body: dict[str, str] = {"code": code, "message": message}
    if field:
        body["field"] = field
    return jsonify({"error": body}), status


def not_found(what: str, ident: str) -> ApiError:
    return ApiError(404, "not_found", f"no {what} with id {ident!r}")
