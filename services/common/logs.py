"""Structured logs: one JSON object per line with the trace and span ids of the request being
served, so a log line leads to its trace (and back). SHELFWISE_LOG_FORMAT=text gives the same
fields as plain text for reading on a terminal.

Secrets never reach a log line: whatever a message or a traceback holds, bearer tokens and the
passwords of URLs (`scheme://user:password@host`, `password=` parameters) are replaced with
`***` by the formatters, the last step before a line is written.

Warnings logged per request are rate limited (`RepeatFilter`, added to the logger of each module
that logs a degraded request): during an outage every such request would otherwise log its own
line (20-40 lines/s were seen), drowning what changed. The first warning from a line of code is
written; the same warning again within SHELFWISE_LOG_REPEAT_SECONDS (10 s) is counted, not
written, and the next one written after that says how many were left out. The metrics count
every degraded request whatever the logs show. Other warnings (a breaker's transitions, start-up
problems) are events in their own right and are all written."""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
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


class RepeatFilter(logging.Filter):
    """Lets through one WARNING per message template (and logger) per `interval` seconds; the
    next one through carries the count of those left out. Errors and lower levels all pass.
    `interval` None: SHELFWISE_LOG_REPEAT_SECONDS, read at the first warning."""

    MAX_TEMPLATES = 1_000  # templates are lines of code; the bound only guards against a leak

    def __init__(self, interval: float | None = None) -> None:
        super().__init__()
        self._interval = interval
        self._lock = threading.Lock()
        # (logger, template) -> [start of the current window, warnings left out in it]
        self._windows: dict[tuple[str, str], list] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return True
        if self._interval is None:
            self._interval = repeat_interval()
        if self._interval <= 0:
            return True
        key = (record.name, str(record.msg))
        now = time.monotonic()
        with self._lock:
            window = self._windows.get(key)
            if window is not None and now - window[0] < self._interval:
                window[1] += 1
                return False
            left_out, started = (window[1], window[0]) if window is not None else (0, now)
            if len(self._windows) >= self.MAX_TEMPLATES and key not in self._windows:
                self._windows.clear()
            self._windows[key] = [now, 0]
        if left_out:
            record.msg = f"{record.msg} [and {left_out} more like this in the {now - started:.0f}s before, not logged]"
        return True


def repeat_interval(environ=None) -> float:
    raw = (environ if environ is not None else os.environ).get("SHELFWISE_LOG_REPEAT_SECONDS", "10")
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise ValueError(f"SHELFWISE_LOG_REPEAT_SECONDS must be a number of seconds >= 0 (0 = log every warning), got {raw!r}")
    return seconds


def setup_logging(service: str) -> None:
    """Configures the root logger of a service process (call once, in __main__)."""
    kind = os.environ.get("SHELFWISE_LOG_FORMAT", "json").lower()
    if kind not in {"json", "text"}:
        raise ValueError(f"SHELFWISE_LOG_FORMAT={kind!r} must be 'json' or 'text'")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter(service) if kind == "json" else TextFormatter(service))
    repeat_interval()  # a bad setting stops the service at start-up, not at its first warning
    logging.basicConfig(level=os.environ.get("SHELFWISE_LOG_LEVEL", "INFO").upper(), handlers=[handler], force=True)
