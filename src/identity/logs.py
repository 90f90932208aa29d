"""How the server's log lines look: plain text for people, or one JSON object per line.

JSON lines are for log shippers: each line parses on its own, with the time in UTC
(ISO 8601, milliseconds), the level, the logger and the message, plus any fields the
caller passed in ``extra`` (the RPC access log adds method, code, duration_ms, peer and
request_id), so queries can filter on fields instead of parsing messages.

    configure("json")
    logging.getLogger("identity.rpc").info("Link OK", extra={"request_id": "r-1"})
    # {"time": "2025-01-02T03:04:05.678Z", "level": "INFO", "logger": "identity.rpc",
    #  "message": "Link OK", "request_id": "r-1"}
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TextIO

__all__ = ["LOG_FORMATS", "JsonFormatter", "TEXT_FORMAT", "configure", "formatter"]

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime", "taskName"}
# Made once: json.dumps with options builds a new encoder for every line.
_ENCODER = json.JSONEncoder(ensure_ascii=False, default=str)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line; extras become top-level fields."""

    _second: tuple[int, str] = (-1, "")  # the last second formatted, and its text

    def format(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        second, stamp = self._second
        if second != seconds:  # strftime once a second, not once a line
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
            self._second = (seconds, stamp)
        line: dict[str, object] = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return _ENCODER.encode(line)


def formatter(log_format: str) -> logging.Formatter:
    """The formatter for ``text`` or ``json``."""
    if log_format == "json":
        return JsonFormatter()
    if log_format == "text":
        return logging.Formatter(TEXT_FORMAT)
    raise ValueError(f"unknown log format {log_format!r} (one of {', '.join(LOG_FORMATS)})")


def configure(log_format: str = "text", level: int = logging.INFO,
              stream: TextIO | None = None) -> logging.Handler:
    """Send every log record at ``level`` or above to ``stream`` (stderr) in ``log_format``.

    Replaces the root logger's handlers, so calling it again switches the format.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
