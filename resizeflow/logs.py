"""Structured logs: one line per event, carrying the workflow's identity.

Every record gets the ``request_id``, ``instance_uuid``, ``migration_id``,
``step`` and ``host`` bound in the current context, so one grep for a request
id or a migration id follows a workflow across the API and every host.
Credentials in URLs are masked before a line is written.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

FIELDS = ("request_id", "instance_uuid", "migration_id", "step", "host")
_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "resizeflow_log_context", default=None
)
# scheme://user:password@host -> scheme://user:***@host, and ?password=... values.
_URL_SECRET = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)([^@\s]+)(@)", re.IGNORECASE)
_PARAM_SECRET = re.compile(r"((?:password|passwd|token|secret)=)([^&\s]+)", re.IGNORECASE)


def redact(text: str) -> str:
    return _PARAM_SECRET.sub(r"\1***", _URL_SECRET.sub(r"\1***\3", text))


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Add fields to every log record written inside the block."""
    token = _context.set({**current(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def current() -> dict[str, Any]:
    return dict(_context.get() or {})


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in current().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": redact(record.getMessage()),
        }
        for key in FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(
            f"{k}={getattr(record, k)}" for k in FIELDS if getattr(record, k, None) is not None
        )
        line = super().format(record)
        return redact(f"{line} {fields}" if fields else line)


def setup(level: str = "INFO", fmt: str = "json", path: Path | None = None) -> None:
    """Route every logger (Celery's included) through one structured handler."""
    handler: logging.Handler = (
        logging.StreamHandler(sys.stderr) if path is None else logging.FileHandler(path)
    )
    handler.addFilter(ContextFilter())
    handler.setFormatter(
        JsonFormatter()
        if fmt == "json"
        else TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
