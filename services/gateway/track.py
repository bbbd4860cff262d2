"""Track: the shopper's interactions (clicks, add-to-carts, purchases) passed on to events, once
the impressions they refer to have been sent."""

from __future__ import annotations

from shelfwise.events.v1 import events_pb2
from shelfwise.gateway.v1 import gateway_pb2

from services.gateway.impressions import ImpressionLog
from services.gateway.request_context import Budget
from services.gateway.validation import validate_track_size


class Tracker:
    def __init__(self, downstream, deadline: float, impressions: ImpressionLog):
        """`deadline`: seconds the events call may take (capped by the caller's own deadline)."""
        self._downstream = downstream
        self._deadline = deadline
        self._impressions = impressions

    async def track(self, request: gateway_pb2.TrackRequest, remaining: float | None) -> gateway_pb2.TrackResponse:
        validate_track_size(request)
        await self._impressions.sent_before_track({i.request_id for i in request.interactions})
        budget = Budget.from_remaining(remaining)
        response = await self._downstream.call(
            "events",
            self._downstream.events.LogEvents,
            events_pb2.LogEventsRequest(interactions=request.interactions),
            budget.timeout(self._deadline, "events"),
        )
        return gateway_pb2.TrackResponse(accepted=response.accepted, duplicates=response.duplicates)
