"""What one Search or Recommend carries through its stages: the caller's time budget, the
shopper and request ids, and the stage timings and degraded stages its response reports."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from shelfwise.gateway.v1 import gateway_pb2

from services.common.errors import DeadlineExceeded

# Left for the gateway's own work after the last stage, so it answers before the caller's deadline.
RESERVE_SECONDS = 0.02


@dataclass
class Budget:
    """Time left under the caller's deadline (None = no deadline)."""

    deadline: float | None

    @classmethod
    def from_remaining(cls, remaining: float | None) -> "Budget":
        return cls(None if remaining is None else time.monotonic() + remaining)

    def timeout(self, stage_limit: float, stage: str) -> float:
        if self.deadline is None:
            return stage_limit
        left = self.deadline - time.monotonic() - RESERVE_SECONDS
        if left <= 0:
            raise DeadlineExceeded(f"{stage}: no time left under the caller's deadline")
        return min(stage_limit, left)


@dataclass(frozen=True)
class RequestContext:
    """One request's ids and budget, and the two lists its stages append to (so a copy with its
    own `timings`, as each interleaved arm gets, still reports into the same `degraded`)."""

    request_id: str
    user_id: str
    session_id: str
    budget: Budget
    timings: list[gateway_pb2.StageTiming] = field(default_factory=list)
    degraded: list[str] = field(default_factory=list)
    # What the page tokens it hands out are bound to (services/gateway/page_tokens.py).
    page_scope: str = ""

    @classmethod
    def of(cls, request, request_id: str, remaining: float | None, page_scope: str) -> "RequestContext":
        return cls(
            request_id, request.user_id, request.session_id, Budget.from_remaining(remaining), page_scope=page_scope
        )

    def timed(self, stage: str, started: float) -> None:
        """Records `stage` as having run from `started` (a time.perf_counter() reading) until now."""
        self.timings.append(gateway_pb2.StageTiming(stage=stage, milliseconds=elapsed_ms(started)))


def elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 3)
