"""Impression logging: each served page is sent to events in the background, never blocking or
failing the request that produced it; a transiently failed send waits in the resend buffer
(event_buffer.py). Track waits (bounded) for the impressions its interactions refer to."""

from __future__ import annotations

import asyncio
import logging

from google.protobuf.timestamp_pb2 import Timestamp
from shelfwise.events.v1 import events_pb2

from services.common.errors import DeadlineExceeded, Unavailable
from services.gateway.event_buffer import ImpressionBuffer
from services.gateway.metrics import GatewayMetrics
from services.gateway.request_context import RequestContext
from services.gateway.stages import Page

log = logging.getLogger(__name__)

IMPRESSION_WAIT_SECONDS = 2.0


class ImpressionLog:
    def __init__(self, downstream, deadline: float, metrics: GatewayMetrics):
        """`deadline`: seconds each send to events may take."""
        self._downstream = downstream
        self._deadline = deadline
        self._metrics = metrics
        self._pending: dict[str, asyncio.Task] = {}
        # Impressions lost for a reason other than events being unreachable (never resent).
        self.failed = 0
        self.buffer = ImpressionBuffer(self._send_batch, metrics)

    def _send_batch(self, impressions):
        return self._downstream.call(
            "events",
            self._downstream.events.LogEvents,
            events_pb2.LogEventsRequest(impressions=impressions),
            self._deadline,
        )

    def log(self, context: RequestContext, surface, query: str, page: Page, offset: int) -> None:
        # A page with no results is logged too (no products): zero-result searches are what
        # search analytics and experiment reports most need to see.
        occurred_at = Timestamp()
        occurred_at.GetCurrentTime()
        request_id = context.request_id
        impression = events_pb2.Impression(
            event_id=f"impression-{request_id}",
            request_id=request_id,
            user_id=context.user_id,
            session_id=context.session_id,
            surface=surface,
            query=query[:2000],
            product_ids=[r.product.id for r in page.results],
            first_position=offset + 1,
            model_version=page.model_version[:128],
            experiment_arm=page.experiment_arm,
            occurred_at=occurred_at,
            features=_served_features(page.results),
            interleaving_arms=list(page.interleaving_arms),
            propensities=list(page.propensities),
            exploration_pool=[r.product.id for r in page.exploration_pool],
            exploration_pool_features=_served_features(page.exploration_pool),
            exploration_pool_shown=list(page.exploration_pool_shown),
        )
        task = asyncio.create_task(self._send(impression))
        self._pending[request_id] = task
        self._metrics.impressions_pending.add(1)
        task.add_done_callback(lambda _: self._done(request_id))

    def _done(self, request_id: str) -> None:
        self._pending.pop(request_id, None)
        self._metrics.impressions_pending.add(-1)

    async def _send(self, impression: events_pb2.Impression) -> None:
        try:
            await self._send_batch([impression])
        except (Unavailable, DeadlineExceeded) as error:  # events (or its database) down: send again later
            self.buffer.add(impression)
            log.warning("impression of request %s not logged yet, buffered: %s", impression.request_id, error)
        except Exception as error:  # never fails the search that produced it
            self.failed += 1
            self._metrics.impressions_failed.add(1)
            log.warning("impression of request %s not logged: %s", impression.request_id, error)

    async def wait(self, request_ids=None, timeout: float = IMPRESSION_WAIT_SECONDS) -> None:
        """Waits (bounded) until the impressions of these requests (default: all) are sent."""
        tasks = [
            task
            for request_id, task in list(self._pending.items())
            if request_ids is None or request_id in request_ids
        ]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    async def sent_before_track(self, request_ids) -> None:
        """Before a Track: the impressions of these requests sent, those in flight waited for
        (bounded) and those waiting in the buffer sent first, so a fast click is not rejected
        as pointing at an unknown request."""
        await self.wait(request_ids)
        await self.buffer.send_waiting(request_ids)

    async def close(self, timeout: float) -> None:
        """At shutdown: waits (bounded) for impressions in flight and for the buffer to drain,
        then stops resending; what still waits is lost with this process and counted as
        dropped (reason "shutdown")."""
        await self.wait(timeout=timeout)
        await self.buffer.wait_until_empty(timeout)
        await self.buffer.close()


def _served_features(results) -> list[events_pb2.ProductFeatures]:
    """The ranking features of each result, aligned with the results, from its reasons (the
    features ranking used; it leaves out zeros, which the log reads as 0). When no result has
    reasons, ranking was bypassed and no features were served: nothing is logged."""
    if not any(result.reasons for result in results):
        return []
    return [
        events_pb2.ProductFeatures(values={reason.feature: reason.value for reason in result.reasons})
        for result in results
    ]
