"""Periodic background work of a service (catalogue sync, vocabulary and popularity refresh):
started with the server, cancelled on shutdown, and never allowed to die on an error."""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

log = logging.getLogger(__name__)


class Periodic:
    def __init__(self, name: str, work: Callable[[], Awaitable[object]], seconds: float, run_first: bool = True):
        self._name = name
        self._work = work
        self._seconds = seconds
        self._run_first = run_first
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        async def loop() -> None:
            if not self._run_first:
                await asyncio.sleep(self._seconds)
            while True:
                try:
                    await self._work()
                except asyncio.CancelledError:
                    raise
                except Exception as error:  # a database or peer blip: try again next round
                    log.warning("%s failed, retrying in %.1fs: %s", self._name, self._seconds, error)
                await asyncio.sleep(self._seconds)

        self._task = asyncio.create_task(loop(), name=self._name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
