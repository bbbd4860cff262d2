"""Log lines are JSON objects carrying the current trace and span ids."""

from __future__ import annotations

import json
import logging

from opentelemetry import trace

from services.common.logs import JsonFormatter, TextFormatter


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
