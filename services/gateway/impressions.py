"""Impression logging: each served page is sent to events in the background, never blocking or
failing the request that produced it; a transiently failed send waits in the resend buffer
(event_buffer.py). Track waits (bounded) for the impressions its interactions refer to.

Impressions are sent in batches: the first one of a batch waits up to `linger` seconds for
others, and a batch goes at once when it reaches `batch_size` (or when a Track or shutdown asks
for its impressions). One LogEvents call and one PostgreSQL transaction per impression cost the
events service about 2.5 ms of CPU per search and the gateway one more client call
(`shelfwise bench search`, 2026-12-05); at 50 searches/s a 100 ms linger makes batches of
about five. An impression reaches PostgreSQL at most `linger` later than before, which no
reader notices: clicks wait for their impression anyway (`sent_before_track`).

A batch belongs to no one request's trace: it is sent under its own root span,
"gateway.log_impressions", linked to the span of each request whose impression it carries (the
OpenTelemetry convention for batches), so a trace of a Search leads to the write of its
impression."""

from __future__ import annotations

import asyncio
import contextvars
import logging

from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry import trace
from shelfwise.events.v1 import events_pb2

from services.common.errors import DeadlineExceeded, Unavailable
from services.common.logs import RepeatFilter
from services.common.tracing import tracer
from services.gateway.event_buffer import ImpressionBuffer
from services.gateway.metrics import GatewayMetrics
from services.gateway.request_context import RequestContext
from services.gateway.stages import Page

log = logging.getLogger(__name__)
log.addFilter(RepeatFilter())  # its warnings are per request: rate limited (services/common/logs.py)
_tracer = tracer(__name__)

IMPRESSION_WAIT_SECONDS = 2.0
BATCH_LINGER_SECONDS = 0.1
BATCH_SIZE = 100


class ImpressionLog:
    def __init__(
        self, downstream, deadline: float, metrics: GatewayMetrics,
        linger: float = BATCH_LINGER_SECONDS, batch_size: int = BATCH_SIZE,
    ):
        """`deadline`: seconds each send to events may take."""
        if linger < 0 or batch_size < 1:
            raise ValueError("linger must be >= 0 and batch_size >= 1")
        self._downstream = downstream
        self._deadline = deadline
        self._metrics = metrics
        self._linger = linger
        self._batch_size = batch_size
        # The batch being gathered, the future its sending resolves and the timer that sends it.
        self._outbox: list[events_pb2.Impression] = []
        self._outbox_links: list[trace.Link] = []
        self._outbox_sent: asyncio.Future | None = None
        self._timer: asyncio.TimerHandle | None = None
        # Request id -> the future resolved once its impression's batch was sent (or failed).
        self._pending: dict[str, asyncio.Future] = {}
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
        if not self._outbox:
            loop = asyncio.get_running_loop()
            self._outbox_sent = loop.create_future()
            # In an empty context: the batch must not join the trace of the request that opened it.
            self._timer = loop.call_later(self._linger, self._flush, context=contextvars.Context())
        self._outbox.append(impression)
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            self._outbox_links.append(trace.Link(span_context))
        self._pending[request_id] = self._outbox_sent
        self._metrics.impressions_pending.add(1)
        if len(self._outbox) >= self._batch_size:
            self._flush()

    def _flush(self) -> None:
        """Sends the gathered batch in the background."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._outbox:
            return
        batch, sent, links = self._outbox, self._outbox_sent, self._outbox_links
        self._outbox, self._outbox_sent, self._outbox_links = [], None, []
        task = asyncio.create_task(self._send_linked(batch, links), context=contextvars.Context())
        task.add_done_callback(lambda _: self._done(batch, sent))

    def _done(self, batch: list[events_pb2.Impression], sent: asyncio.Future) -> None:
        for impression in batch:
            if self._pending.get(impression.request_id) is sent:
                del self._pending[impression.request_id]
        self._metrics.impressions_pending.add(-len(batch))
        sent.set_result(None)

    async def _send_linked(self, batch: list[events_pb2.Impression], links: list[trace.Link]) -> None:
        with _tracer.start_as_current_span("gateway.log_impressions", links=links) as span:
            span.set_attribute("batch_size", len(batch))
            await self._send(batch)

    async def _send(self, batch: list[events_pb2.Impression]) -> None:
        try:
            await self._send_batch(batch)
        except (Unavailable, DeadlineExceeded) as error:  # events (or its database) down: send again later
            for impression in batch:
                self.buffer.add(impression)
            log.warning("%d impressions not logged yet, buffered: %s", len(batch), error)
        except Exception as error:  # never fails the search that produced it
            if len(batch) > 1:
                # One impression events refuses must not take the rest of its batch with it.
                for impression in batch:
                    await self._send([impression])
                return
            self.failed += 1
            self._metrics.impressions_failed.add(1)
            log.warning("impression of request %s not logged: %s", batch[0].request_id, error)

    async def wait(self, request_ids=None, timeout: float = IMPRESSION_WAIT_SECONDS) -> None:
        """Waits (bounded) until the impressions of these requests (default: all) are sent; a
        batch still gathering any of them goes at once."""
        waiting = {
            sent
            for request_id, sent in list(self._pending.items())
            if request_ids is None or request_id in request_ids
        }
        if self._outbox_sent is not None and self._outbox_sent in waiting:
            self._flush()
        if waiting:
            await asyncio.wait(waiting, timeout=timeout)

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
