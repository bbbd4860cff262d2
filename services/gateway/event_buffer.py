"""The gateway's buffer of impressions that could not be sent yet.

An impression is sent once in the background right after its page is served (impressions.py).
When that send fails for a transient reason (the events service, or its database, is down or
slow: UNAVAILABLE / DEADLINE_EXCEEDED), the impression waits here and a background task sends
the waiting ones again in batches, with exponential backoff, until they are stored. Event ids
make a repeat harmless, so an impression whose first send did commit is only counted as a
duplicate.

The buffer is bounded (memory is the limit, not the events service's patience): when it is
full, the oldest impression is dropped — recent impressions are the ones clicks still arrive
for. A Track pointing at a waiting impression sends it first (`send_waiting`). The buffer lives
in the gateway's memory: at shutdown the gateway gives it the events deadline to drain, and
what still waits then is lost; the metrics say how many.

  shelfwise.gateway.impressions_buffered  up-down counter  {impression}  (waiting for a resend)
  shelfwise.gateway.impressions_dropped   counter          {impression}  reason (buffer_full | rejected | shutdown)
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from typing import Awaitable, Callable, Sequence

from shelfwise.events.v1 import events_pb2

from services.common.errors import DeadlineExceeded, Unavailable
from services.gateway.metrics import GatewayMetrics

log = logging.getLogger(__name__)

# Failures after which the same impressions may well be stored later.
TRANSIENT_ERRORS = (Unavailable, DeadlineExceeded)

Send = Callable[[Sequence[events_pb2.Impression]], Awaitable[object]]


class ImpressionBuffer:
    def __init__(
        self,
        send: Send,
        metrics: GatewayMetrics,
        capacity: int = 10_000,
        batch_size: int = 100,
        first_delay: float = 0.2,
        max_delay: float = 10.0,
    ) -> None:
        if capacity < 1 or batch_size < 1:
            raise ValueError("capacity and batch_size must be >= 1")
        self._send = send
        self._metrics = metrics
        self._waiting: deque[events_pb2.Impression] = deque()
        self._capacity = capacity
        self._batch_size = batch_size
        self._first_delay = first_delay
        self._max_delay = max_delay
        self._task: asyncio.Task | None = None
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, impression: events_pb2.Impression) -> None:
        """Keeps an impression whose send failed transiently; resending starts if idle."""
        if len(self._waiting) >= self._capacity:
            oldest = self._waiting.popleft()
            self._drop(1, "buffer_full")
            self._metrics.impressions_buffered.add(-1)
            log.warning("impression buffer full (%d): dropped impression of request %s", self._capacity, oldest.request_id)
        self._waiting.append(impression)
        self._metrics.impressions_buffered.add(1)
        if self._task is None or self._task.done():
            # Runs only while something waits, so an idle gateway holds no task.
            self._task = asyncio.create_task(self._resend_until_empty(), name="impression resend")

    async def send_waiting(self, request_ids: set[str]) -> None:
        """Sends the waiting impressions of these requests now: a Track for them is about to
        point at them, and events refuses interactions whose impression it has not stored. A
        transient failure leaves them waiting and is raised (that Track would fail against the
        same events service anyway); a concurrent resend only makes a harmless duplicate."""
        batch = [impression for impression in self._waiting if impression.request_id in request_ids]
        if batch:
            await self._send(batch)
            self._remove(batch)

    async def wait_until_empty(self, timeout: float) -> bool:
        """Waits (bounded) for the waiting impressions to be sent; True if none is left."""
        task = self._task
        if task is not None and not task.done():
            await asyncio.wait([task], timeout=timeout)
        return not self._waiting

    async def close(self) -> None:
        """Stops resending; impressions still waiting are dropped (reason "shutdown")."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._waiting:
            self._drop(len(self._waiting), "shutdown")
            self._metrics.impressions_buffered.add(-len(self._waiting))
            self._waiting.clear()

    def _drop(self, count: int, reason: str) -> None:
        self.dropped += count
        self._metrics.impressions_dropped.add(count, {"reason": reason})

    async def _resend_until_empty(self) -> None:
        delay = self._first_delay
        while self._waiting:
            # Wait first: the send that put the impression here has only just failed.
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            batch = [self._waiting[i] for i in range(min(self._batch_size, len(self._waiting)))]
            try:
                await self._send(batch)
            except TRANSIENT_ERRORS as error:
                delay = min(self._max_delay, delay * 2)
                log.warning("resending %d impressions failed, next try in about %.1fs: %s", len(batch), delay, error)
                continue
            except Exception as error:  # the batch was refused: find and drop the refused ones
                log.warning("resent impressions refused (%s); sending them one by one", error)
                await self._send_one_by_one(batch)
            else:
                self._remove(batch)
            delay = self._first_delay

    async def _send_one_by_one(self, batch: list[events_pb2.Impression]) -> None:
        for impression in batch:
            try:
                await self._send([impression])
            except TRANSIENT_ERRORS:
                return  # the rest stays for the next round
            except Exception as error:
                log.warning("impression of request %s refused, dropped: %s", impression.request_id, error)
                self._drop(1, "rejected")
            self._remove([impression])

    def _remove(self, sent: list[events_pb2.Impression]) -> None:
        # Sent impressions are the oldest ones unless add() dropped some meanwhile: remove by identity.
        sent_ids = {id(impression) for impression in sent}
        kept = deque(impression for impression in self._waiting if id(impression) not in sent_ids)
        removed = len(self._waiting) - len(kept)
        self._waiting = kept
        self._metrics.impressions_buffered.add(-removed)
