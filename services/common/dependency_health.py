"""A service's readiness follows the one dependency it cannot serve without: the gateway's
follows retrieval (no catalogue, nothing to show), the events service's its database (nothing
to store to). While the dependency is down the service reports NOT_SERVING, so load balancers
and Kubernetes readiness send calls to replicas that can answer; liveness is not touched (the
process is fine, restarting it would not help). `probe` answers whether the dependency is up;
an exception or a hang past `timeout` counts as down."""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from services.common.background import Periodic
from services.common.server import RunningServer

log = logging.getLogger(__name__)


class DependencyHealth:
    def __init__(
        self, running: RunningServer, dependency: str, probe: Callable[[], Awaitable[bool]],
        interval: float = 2.0, timeout: float = 2.0,
    ) -> None:
        self._running = running
        self._dependency = dependency
        self._probe = probe
        self._timeout = timeout
        self._serving: bool | None = None
        self._checker = Periodic(f"{dependency} health", self.check, interval)

    async def check(self) -> None:
        try:
            serving = bool(await asyncio.wait_for(self._probe(), self._timeout))
        except Exception as error:  # down, whatever the way
            log.debug("%s probe failed: %s", self._dependency, error)
            serving = False
        if serving != self._serving:
            state = "SERVING" if serving else "NOT_SERVING"
            log.info("%s %s: %s", self._dependency, "up" if serving else "down", state)
            await self._running.set_serving(serving)
            self._serving = serving

    def start(self) -> None:
        self._checker.start()

    async def stop(self) -> None:
        await self._checker.stop()
