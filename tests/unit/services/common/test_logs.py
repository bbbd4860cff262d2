"""Log lines are JSON objects carrying the current trace and span ids."""

from __future__ import annotations

import json
import logging

import pytest

from opentelemetry import trace

from services.common.logs import JsonFormatter, RepeatFilter, TextFormatter, repeat_interval


def record(message: str) -> logging.LogRecord:
    return logging.LogRecord("shelfwise.test", logging.WARNING, __file__, 1, message, (), None)


def test_json_log_line_carries_trace_and_span_ids_inside_a_span():
    with trace.get_tracer("test").start_as_current_span("work") as span:
        line = json.loads(JsonFormatter("gateway").format(record("ranking degraded")))
        context = span.get_span_context()
    assert line["message"] == "ranking degraded" and line["service"] == "gateway" and line["level"] == "WARNING"
    assert line["trace_id"] == format(context.trace_id, "032x")
    assert line["span_id"] == format(context.span_id, "016x")


def test_json_log_line_outside_a_span_has_no_trace_id():
    line = json.loads(JsonFormatter("events").format(record("started")))
    assert "trace_id" not in line


def test_text_format_names_the_trace_id():
    with trace.get_tracer("test").start_as_current_span("work") as span:
        text = TextFormatter("retrieval").format(record("x"))
    assert f"trace_id={format(span.get_span_context().trace_id, '032x')}" in text


# --- repeated warnings -------------------------------------------------------------------------


def warning(template: str, *args, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord("shelfwise.test", level, __file__, 1, template, args, None)


def test_a_repeated_warning_is_written_once_per_interval_then_says_how_many_were_left_out(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("services.common.logs.time.monotonic", lambda: now[0])
    repeats = RepeatFilter(interval=10.0)
    assert repeats.filter(warning("ranking degraded: %s", "deadline"))
    assert not any(repeats.filter(warning("ranking degraded: %s", f"error {n}")) for n in range(37))
    assert repeats.filter(warning("query understanding degraded: %s", "down"))  # another line of code
    now[0] += 10.5
    written = warning("ranking degraded: %s", "deadline")
    assert repeats.filter(written)
    assert written.getMessage() == "ranking degraded: deadline [and 37 more like this in the 10s before, not logged]"
    assert not repeats.filter(warning("ranking degraded: %s", "deadline"))


def test_errors_and_info_are_never_left_out():
    repeats = RepeatFilter(interval=10.0)
    assert all(repeats.filter(warning("boom", level=logging.ERROR)) for _ in range(5))
    assert all(repeats.filter(warning("started", level=logging.INFO)) for _ in range(5))


def test_interval_zero_writes_every_warning_and_a_bad_setting_is_named():
    repeats = RepeatFilter(interval=repeat_interval({"SHELFWISE_LOG_REPEAT_SECONDS": "0"}))
    assert all(repeats.filter(warning("ranking degraded")) for _ in range(5))
    with pytest.raises(ValueError, match="SHELFWISE_LOG_REPEAT_SECONDS"):
        repeat_interval({"SHELFWISE_LOG_REPEAT_SECONDS": "soon"})
