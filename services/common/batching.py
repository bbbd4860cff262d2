"""Micro-batching of concurrent calls inside one service process.

Some work costs far less per item when items go together: a transformer encoding several
texts, or one matrix product scoring several query vectors against the whole catalogue (the
catalogue matrix is read once instead of once per query). `MicroBatcher` gathers the calls that
arrive while a batch is running and runs them as the next batch. A lone call goes at once, so
there is no added wait at low load; under load the batches form by themselves.

A call whose caller gave up while waiting (its task was cancelled, e.g. its deadline passed)
is left out of the batch rather than computed for nobody. A failing batch fails every call in
it with the same error.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Generic, Sequence, TypeVar

from services.common.tracing import tracer

_tracer = tracer(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")


class MicroBatcher(Generic[Item, Result]):
    """`await submit(item)` -> the result for `item` of `run_batch(items)`, which takes up to
    `max_batch` items and returns one result per item, in order. Batches run one at a time,
    each in a span named `span_name` with its size."""

    def __init__(
        self,
        run_batch: Callable[[list[Item]], Awaitable[Sequence[Result]]],
        span_name: str,
        max_batch: int = 16,
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self._run_batch = run_batch
        self._span_name = span_name
        self._max_batch = max_batch
        self._waiting: list[tuple[Item, asyncio.Future]] = []
        self._drainer: asyncio.Task | None = None
        self.batches = 0

    async def submit(self, item: Item) -> Result:
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._waiting:
            batch = [(item, future) for item, future in self._waiting[: self._max_batch] if not future.done()]
            del self._waiting[: self._max_batch]
            if not batch:
                continue
            try:
                with _tracer.start_as_current_span(self._span_name) as span:
                    span.set_attribute("batch_size", len(batch))
                    results = await self._run_batch([item for item, _ in batch])
            except Exception as error:  # every waiter gets it
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            finally:
                self.batches += 1
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)
