"""Structured logs: one JSON object per line with the trace and span ids of the request being
served, so a log line leads to its trace (and back). SHELFWISE_LOG_FORMAT=text gives the same
fields as plain text for reading on a terminal.

Secrets never reach a log line: whatever a message or a traceback holds, bearer tokens and the
passwords of URLs (`scheme://user:password@host`, `password=` parameters) are replaced with
`***` by the formatters, the last step before a line is written."""

from __future__ import annotations

import json
import logging
import os
import re
from datetime import datetime, timezone

from opentelemetry import trace


_SECRETS = (
    (re.compile(r"(?i)\b(bearer\s+)[^\s'\",;]+"), r"\1***"),
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@", re.IGNORECASE), r"\1***@"),
    (re.compile(r"(?i)\b(password|passwd|token|secret)=[^&\s'\"]+"), r"\1=***"),
)


def redact_secrets(text: str) -> str:
    """`text` with bearer tokens and URL/parameter passwords replaced by ***."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


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
            "message": redact_secrets(record.getMessage()),
        }
        if trace_id:
            entry["trace_id"], entry["span_id"] = trace_id, span_id
        if record.exc_info:
            entry["exception"] = redact_secrets(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self, service: str):
        super().__init__("%(asctime)s %(levelname)s " + service + " %(name)s trace_id=%(trace_id)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.trace_id = _ids()[0] or "-"
        return redact_secrets(super().format(record))


def setup_logging(service: str) -> None:
    """Configures the root logger of a service process (call once, in __main__)."""
    kind = os.environ.get("SHELFWISE_LOG_FORMAT", "json").lower()
    if kind not in {"json", "text"}:
        raise ValueError(f"SHELFWISE_LOG_FORMAT={kind!r} must be 'json' or 'text'")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter(service) if kind == "json" else TextFormatter(service))
    logging.basicConfig(level=os.environ.get("SHELFWISE_LOG_LEVEL", "INFO").upper(), handlers=[handler], force=True)
