"""Supervision of the services `shelfwise up` started as child processes: one that exits is
reported and started again, with a growing wait between restarts of the same service.

What Kubernetes does for the deployed system (a crashed container is restarted with back-off,
and `kubectl get pods` counts the restarts), done here for the local one: before, a dead service
stayed dead while `up` kept saying "running". A service is checked every `check_seconds`; after
an exit it waits `first_delay` seconds, doubled after every further exit up to `max_delay`, and
back to `first_delay` once the service has run `stable_seconds` since its last restart. Each exit and
restart is reported as one line (`report`, print by default) and counted in `restarts`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Callable

from services.local.stack import LocalStack


@dataclass(frozen=True)
class SupervisionSettings:
    check_seconds: float = 0.5
    first_delay: float = 0.5
    max_delay: float = 30.0
    stable_seconds: float = 60.0
    # How long a restarted service may take to say SERVING (retrieval rebuilds its indexes).
    start_timeout: float = 120.0


class Supervisor:
    def __init__(
        self, stack: LocalStack, settings: SupervisionSettings = SupervisionSettings(),
        report: Callable[[str], None] = lambda line: print(line, flush=True),
    ) -> None:
        self._stack = stack
        self._settings = settings
        self._report = report
        self.restarts: dict[str, int] = {}
        self._delay: dict[str, float] = {}
        self._started_at: dict[str, float] = {}

    async def run(self) -> None:
        """Watches until cancelled (`up` cancels it before stopping the stack)."""
        while True:
            for name, process in list(self._stack.processes.items()):
                code = process.poll()
                if code is not None:
                    await self._restart(name, code)
            await asyncio.sleep(self._settings.check_seconds)

    async def _restart(self, name: str, code: int) -> None:
        settings = self._settings
        now = time.monotonic()
        if now - self._started_at.get(name, now) >= settings.stable_seconds:
            self._delay[name] = settings.first_delay  # it had been running a while: a new episode
        delay = self._delay.get(name, settings.first_delay)
        self._delay[name] = min(settings.max_delay, delay * 2)
        count = self.restarts.get(name, 0) + 1
        self.restarts[name] = count
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        self._report(f"{name} {how}; restarting it in {delay:.1f}s (restart {count})")
        await asyncio.sleep(delay)
        started = time.monotonic()
        try:
            await self._stack.restart(name, settings.start_timeout)
        except Exception as error:  # reported; the next check sees it down and tries again
            self._report(f"{name} did not come back: {str(error).splitlines()[0]}")
            return
        self._started_at[name] = time.monotonic()
        self._report(f"{name} restarted: SERVING again ({time.monotonic() - started:.1f}s)")
