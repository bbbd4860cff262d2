"""Per-caller rate limits: one token bucket per caller, refilled continuously.

A caller is the authenticated principal (`services.common.auth`), or the client's host when
authentication is off (ports change with every connection, hosts do not). A call that finds
its bucket empty is refused with RESOURCE_EXHAUSTED and a message giving the limit, and counted
in `shelfwise.rpc.rate_limited` (by principal; callers without one count as "anonymous", so a
flood of client addresses cannot explode the metric's cardinality).

Off by default (rate 0). The services' own principals can be exempted, so that the gateway's
fan-out to the other services is never throttled by a limit meant for shops.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from opentelemetry import metrics

# Buckets of callers idle long enough are full again anyway: forgetting the least recently
# seen ones beyond this many bounds the memory a stream of new client addresses can take.
MAX_TRACKED_CALLERS = 10_000


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets keyed by caller: `rate` calls per second on average, bursts up to `burst`."""

    def __init__(
        self,
        rate: float,
        burst: int,
        exempt: tuple[str, ...] = (),
        clock: Callable[[], float] = time.monotonic,
        max_callers: int = MAX_TRACKED_CALLERS,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0 calls per second, got {rate}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        self.rate = rate
        self.burst = burst
        self._exempt = frozenset(exempt)
        self._clock = clock
        self._max_callers = max_callers
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._refused = metrics.get_meter("shelfwise.server").create_counter(
            "shelfwise.rpc.rate_limited",
            unit="{request}",
            description="calls refused with RESOURCE_EXHAUSTED by the per-caller rate limit, by principal",
        )

    def exempt(self, principal: str | None) -> bool:
        return principal is not None and principal in self._exempt

    def allow(self, caller: str, principal: str | None = None, method: str = "") -> bool:
        """Takes one token from `caller`'s bucket; False (and counted) when it is empty."""
        if self.exempt(principal):
            return True
        now = self._clock()
        bucket = self._buckets.get(caller)
        if bucket is None:
            bucket = self._buckets[caller] = _Bucket(float(self.burst), now)
            if len(self._buckets) > self._max_callers:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(caller)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        self._refused.add(1, {"shelfwise.principal": principal or "anonymous", "rpc.method": method})
        return False

    def describe(self) -> str:
        return f"{self.rate:g} calls per second per caller, bursts of up to {self.burst}"
