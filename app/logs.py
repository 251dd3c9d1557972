"""Logging: plain lines by default, one JSON object per line with LOG_JSON=1."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

_configured = False


# Fields a log call may pass with `extra=`; they become top-level JSON keys (state changes carry them).
FIELDS = ("job_id", "item_id", "attempt", "worker", "kind", "from_status", "to_status")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
            "msg": record.getMessage(),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                data[name] = value
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data)


def use_json(logger: logging.Logger) -> None:
    """Switch a logger's handlers (e.g. the ones Celery set up) to one JSON object per line."""
    for handler in logger.handlers:
        handler.setFormatter(JsonFormatter())


def configure_logging(as_json: bool) -> None:
    global _configured
    if _configured:
        return
    _configured = True
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if as_json else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(handler)
    root.setLevel(logging.INFO)
