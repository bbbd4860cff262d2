"""Circuit breakers: stop calling a dependency that keeps failing, and find out by itself when
it is back.

One breaker guards one dependency (a downstream service of the gateway, one model on a Triton
server). States:

- closed: calls go through; `failure_threshold` failures in a row open it;
- open: calls fail at once with `CircuitOpen` (an `Unavailable`, so every caller's existing
  degradation path applies unchanged) until `open_seconds` have passed;
- half-open: one call (the probe) goes through, the others still fail fast; the probe's
  success closes the breaker, its failure opens it for another `open_seconds`.

Only what says "the dependency is down or too slow" counts as a failure (`Unavailable`,
`DeadlineExceeded`); a refusal by the dependency's admission control (`Overloaded`) does not:
it answered at once, and opening the breaker would turn its shedding of some calls into
failing all of them. Any other answer, an error about the request included, proves the
dependency alive, and so does a success that arrives while the breaker is open (a call let
through before it opened): it closes the breaker at once. Each transition is logged once and reported to an optional observer (the
metrics). The clock is injected so tests need no sleeping.

Hand-written rather than a library: aiobreaker was last released in 2021, purgatory offers no
injectable clock nor a single-probe half-open state, and the whole state machine is this page.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Mapping, TypeVar

from services.common.env import env_float, env_int
from services.common.errors import DeadlineExceeded, Overloaded, Unavailable

log = logging.getLogger(__name__)

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
# Failures that say the dependency is down or too slow; nothing else counts against it.
FAILURES = (Unavailable, DeadlineExceeded)

T = TypeVar("T")


class CircuitOpen(Unavailable):
    """Raised instead of calling a dependency whose breaker is open."""


@dataclass(frozen=True)
class CircuitSettings:
    """SHELFWISE_CIRCUIT_FAILURES (consecutive failures that open a breaker, default 5) and
    SHELFWISE_CIRCUIT_OPEN_SECONDS (how long it stays open before one probe, default 0.5).

    Half a second, not the 5 s it was: every call in the open time fails, so after the
    dependency is back its callers kept failing for up to that long (issue 27). A probe is one
    call at a time, so probing twice a second costs a dead dependency next to nothing."""

    failure_threshold: int = 5
    open_seconds: float = 0.5

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "CircuitSettings":
        return cls(
            failure_threshold=env_int("SHELFWISE_CIRCUIT_FAILURES", 5, environ, minimum=1),
            open_seconds=env_float("SHELFWISE_CIRCUIT_OPEN_SECONDS", 0.5, environ, minimum=0.0),
        )


Observer = Callable[[str, str], None]  # (breaker name, new state)


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        settings: CircuitSettings = CircuitSettings(),
        clock: Callable[[], float] = time.monotonic,
        observer: Observer | None = None,
    ) -> None:
        self.name = name
        self._threshold = settings.failure_threshold
        self._open_seconds = settings.open_seconds
        self._clock = clock
        self._observer = observer
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self.rejected = 0

    @property
    def state(self) -> str:
        if self._state == OPEN and self._clock() - self._opened_at >= self._open_seconds:
            self._transition(HALF_OPEN)
        return self._state

    def allow(self) -> bool:
        """Whether a call may go now. In half-open, True once: the caller is the probe and
        must report its outcome (`success`, `failure` or `abandoned`)."""
        state = self.state
        if state == CLOSED:
            return True
        if state == HALF_OPEN and not self._probing:
            self._probing = True
            return True
        self.rejected += 1
        return False

    def check(self) -> None:
        """`allow()`, raising `CircuitOpen` when the call may not go."""
        if not self.allow():
            left = max(0.0, self._opened_at + self._open_seconds - self._clock())
            raise CircuitOpen(f"{self.name}: circuit open after repeated failures, next probe in {left:.1f}s")

    def success(self) -> None:
        self._probing = False
        self._failures = 0
        if self._state != CLOSED:
            self._transition(CLOSED)

    def failure(self) -> None:
        self._probing = False
        self._failures += 1
        if self._state == HALF_OPEN or (self._state == CLOSED and self._failures >= self._threshold):
            self._opened_at = self._clock()
            self._transition(OPEN)
        elif self._state == OPEN:  # a call let through before it opened failed late: stay open longer
            self._opened_at = self._clock()

    def abandoned(self) -> None:
        """The call ended without a verdict (cancelled by its caller): the next call may probe."""
        self._probing = False

    async def call(self, make_call: Callable[[], Awaitable[T]], judge_deadline: bool = True) -> T:
        """Runs `make_call()` if allowed and records its outcome; raises `CircuitOpen` if not.
        `judge_deadline=False`: the call ran under a shorter time limit than the dependency is
        owed (a caller's tight deadline), so its DeadlineExceeded says nothing about the
        dependency and is no failure; one impatient caller cannot open the breaker for all."""
        self.check()
        try:
            result = await make_call()
        except Overloaded:
            self.success()  # it answered at once: alive, only busy
            raise
        except DeadlineExceeded:
            if judge_deadline:
                self.failure()
            else:
                self.abandoned()
            raise
        except FAILURES:
            self.failure()
            raise
        except asyncio.CancelledError:
            self.abandoned()
            raise
        except Exception:
            self.success()  # it answered, with an error about the request
            raise
        self.success()
        return result

    def _transition(self, state: str) -> None:
        previous, self._state = self._state, state
        if state == OPEN:
            log.warning(
                "circuit %s: %s -> open after %d consecutive failures; failing fast for %.1fs",
                self.name, previous, self._failures, self._open_seconds,
            )
        else:
            log.info("circuit %s: %s -> %s", self.name, previous, state)
        if self._observer is not None:
            self._observer(self.name, state)


class Breakers:
    """Breakers by name, made on first use with the same settings and observer."""

    def __init__(self, settings: CircuitSettings, observer: Observer | None = None, prefix: str = "",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._observer = observer
        self._prefix = prefix
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}

    def __getitem__(self, name: str) -> CircuitBreaker:
        breaker = self._breakers.get(name)
        if breaker is None:
            breaker = CircuitBreaker(self._prefix + name, self._settings, self._clock, self._observer)
            self._breakers[name] = breaker
        return breaker
