"""Unit tests of services.gateway.impressions: impressions go to events in batches.

The events service is replaced by `RecordingEvents`, a stand-in for the gateway's `Downstream`
seam that records each LogEvents batch (the real path, gateway to events to PostgreSQL, is
covered by the integration tests)."""

from __future__ import annotations

import asyncio

import pytest
from shelfwise.common.v1 import common_pb2
from shelfwise.events.v1 import events_pb2
from shelfwise.gateway.v1 import gateway_pb2

from services.common.errors import InvalidArgument, Unavailable
from services.gateway.impressions import ImpressionLog
from services.gateway.metrics import GatewayMetrics
from services.gateway.request_context import Budget, RequestContext
from services.gateway.stages import Page


class RecordingEvents:
    """Records each batch sent; `fail_with` (an exception or a function of the batch giving one)
    makes sends fail."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.fail_with = None
        self.events = self  # Downstream.events.LogEvents

    def LogEvents(self, request):  # noqa: N802 - the gRPC method's name
        return request

    async def call(self, service, method, request, deadline):
        failure = self.fail_with(request.impressions) if callable(self.fail_with) else self.fail_with
        if failure is not None:
            raise failure
        self.batches.append([impression.request_id for impression in request.impressions])


def served(log: ImpressionLog, request_id: str) -> None:
    context = RequestContext(request_id, "", "", Budget.from_remaining(None))
    page = Page(
        results=[gateway_pb2.SearchResult(product=common_pb2.Product(id="p1"), position=1)],
        total=1, next_token="", model_version="test",
    )
    log.log(context, events_pb2.SURFACE_SEARCH, "wine", page, 0)


async def test_impressions_served_together_go_in_one_batch_after_the_linger() -> None:
    events = RecordingEvents()
    log = ImpressionLog(events, deadline=1.0, metrics=GatewayMetrics(), linger=0.05)
    for n in range(3):
        served(log, f"r{n}")
    assert events.batches == []  # still gathering
    await asyncio.sleep(0.2)
    assert events.batches == [["r0", "r1", "r2"]]


async def test_a_full_batch_goes_at_once() -> None:
    events = RecordingEvents()
    log = ImpressionLog(events, deadline=1.0, metrics=GatewayMetrics(), linger=60.0, batch_size=2)
    served(log, "r0")
    served(log, "r1")
    served(log, "r2")
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert events.batches == [["r0", "r1"]]
    await log.close(timeout=1.0)
    assert events.batches == [["r0", "r1"], ["r2"]]


async def test_waiting_for_an_impression_sends_its_batch_without_the_linger() -> None:
    events = RecordingEvents()
    log = ImpressionLog(events, deadline=1.0, metrics=GatewayMetrics(), linger=60.0)
    served(log, "r0")
    served(log, "r1")
    await asyncio.wait_for(log.sent_before_track({"r1"}), timeout=1.0)
    assert events.batches == [["r0", "r1"]]


async def test_a_refused_impression_does_not_take_its_batch_with_it() -> None:
    events = RecordingEvents()
    events.fail_with = lambda batch: InvalidArgument("impressions", "refused") if any(i.request_id == "bad" for i in batch) else None
    log = ImpressionLog(events, deadline=1.0, metrics=GatewayMetrics(), linger=0.01)
    for request_id in ("r0", "bad", "r2"):
        served(log, request_id)
    await log.close(timeout=1.0)
    assert events.batches == [["r0"], ["r2"]]
    assert log.failed == 1


async def test_a_batch_events_cannot_take_now_waits_in_the_buffer() -> None:
    events = RecordingEvents()
    events.fail_with = Unavailable("events: down")
    log = ImpressionLog(events, deadline=1.0, metrics=GatewayMetrics(), linger=0.01)
    served(log, "r0")
    served(log, "r1")
    await log.wait(timeout=1.0)
    assert len(log.buffer) == 2 and events.batches == []
    events.fail_with = None
    await log.sent_before_track({"r0", "r1"})
    assert events.batches == [["r0", "r1"]]
    await log.close(timeout=1.0)


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        ImpressionLog(RecordingEvents(), deadline=1.0, metrics=GatewayMetrics(), batch_size=0)
