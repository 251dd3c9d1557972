"""gunicorn settings for the web app, read from the working directory (the repository root, or
/srv/bulkgen in Dockerfile.web); command-line options still win.

Long request URIs: gunicorn answers a request line longer than `limit_request_line` itself, with an
HTML page, before Flask sees it. The line may be as long as gunicorn allows (8190 bytes), so that the
app's own limit (MAX_URI_BYTES, web/requestlimits.py) answers in the usual range: JSON on /api/v1.
A line longer still gets gunicorn's 414 from the worker below, which writes it as JSON too.
"""

from __future__ import annotations

import json

from gunicorn import util
from gunicorn.http.errors import LimitRequestLine
from gunicorn.workers.gthread import ThreadWorker

limit_request_line = 8190


class JsonErrorThreadWorker(ThreadWorker):
    """gunicorn's threaded worker, answering a too-long request line with the API's JSON error shape.
    The path could not be read, so the answer cannot tell API callers from browsers: JSON for all."""

    def handle_error(self, req, client, addr, exc):  # noqa: ANN001, ANN201 - gunicorn's signature
        if not isinstance(exc, LimitRequestLine):
            return super().handle_error(req, client, addr, exc)
        self.log.warning("Invalid request from ip=%s: %s", (addr or ("",))[0], exc)
        body = json.dumps(
            {
                "error": {
                    "code": "uri_too_long",
                    "message": f"the request line is longer than {limit_request_line} bytes",
                }
            }
        ).encode()
        head = (
            "HTTP/1.1 414 URI Too Long\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode("latin-1")
        try:
            util.write_nonblock(client, head + body)
        except Exception:  # noqa: BLE001 - the client may be gone; nothing to tell it then
            self.log.debug("Failed to send error message.")


worker_class = JsonErrorThreadWorker
