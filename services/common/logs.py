"""Structured logs: one JSON object per line with the trace and span ids of the request being
served, so a log line leads to its trace (and back). SHELFWISE_LOG_FORMAT=text gives the same
fields as plain text for reading on a terminal."""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone

from opentelemetry import trace


def _ids() -> tuple[str, str]:
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return "", ""
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str):
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        trace_id, span_id = _ids()
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if trace_id:
            entry["trace_id"], entry["span_id"] = trace_id, span_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self, service: str):
        super().__init__("%(asctime)s %(levelname)s " + service + " %(name)s trace_id=%(trace_id)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.trace_id = _ids()[0] or "-"
        return super().format(record)


def setup_logging(service: str) -> None:
    """Configures the root logger of a service process (call once, in __main__)."""
    kind = os.environ.get("SHELFWISE_LOG_FORMAT", "json").lower()
    if kind not in {"json", "text"}:
        raise ValueError(f"SHELFWISE_LOG_FORMAT={kind!r} must be 'json' or 'text'")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter(service) if kind == "json" else TextFormatter(service))
    logging.basicConfig(level=os.environ.get("SHELFWISE_LOG_LEVEL", "INFO").upper(), handlers=[handler], force=True)
