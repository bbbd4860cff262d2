"""Admission control: each server method runs at most `limit` calls at once, and the limit
adapts to the latency the method shows; a call beyond it is refused at once with
RESOURCE_EXHAUSTED and a retry hint, instead of waiting in a queue the caller cannot see.

Why. Without it, 500 concurrent searches on the two-core reference machine waited in the
services' queues for seconds (p50 3.7 s), timed out inside the gateway, and opened the
breakers of healthy services (issue 27). A server that refuses what it cannot start keeps the
calls it did start near their normal latency, and a refusal costs its caller milliseconds, not
its whole deadline.

How the limit adapts (`AdaptiveLimit`, in the spirit of Netflix's concurrency-limits). Finished
calls are grouped in windows of `window_samples` (or `window_seconds`, whichever comes first);
a window's latency is its median. The *baseline* follows a faster window at once (halfway), a
slower one slowly (a tenth) and only when the limit turned nobody away in it or sits at its
floor: a sustained overload cannot teach the limit that its own queue is normal, and a method
that became slower for good is not held at the floor. Each window in which the limit bound (a
call was refused or concurrency reached it):

- median above `tolerance` x baseline: the limit shrinks in proportion
  (`limit * tolerance / ratio`, at most halved), never below `min_limit`;
- otherwise it grows by one, never above `max_limit`.

A window in which the limit did not bind leaves it where it is: it decided nothing, so it
learns nothing. The limit starts at its floor and grows one per window while latency holds.

Waiting is not load. The latency of a call that failed (a dependency down or past its stage
deadline: breakers and deadlines deal with that) or that answered degraded (a response whose
`degraded_stages` / `degraded_components` is not empty) is not a sample: it tells how long a
dependency made it wait, not how busy this server is. And a call that has run
`STALLED_AFTER_BASELINES` times the method's usual latency (the baseline, followed up by at most
2% a window) frees its slot (`AdaptiveLimit.set_aside`): otherwise,
with a dependency frozen, the few calls waiting for its deadline hold every slot, the server
refuses everything else, and the breaker that would notice the freeze sees too few calls to
open (tests/integration/test_faults.py failed so before these rules; and with the hold at two
baselines, the slow searches after Triton's restart lifted it to 0.6 s and were refused).

Variants tried with `shelfwise bench search` at 20, 50 and 200 requests/s
(services/cli/README.md): Netflix's Gradient2 compares with a long average of every window,
which under a sustained overload follows the overloaded latency; a floor of 4 searches at the
gateway left the admitted p99 at 4.5x the unloaded one; a baseline from windows with at most
half the limit in use refused 11% of searches at 50 requests/s; a 20 ms wait for a slot before
refusing serialised searches and slowed those admitted; tolerances 1.1, 1.3 and 1.5 and
windows of 20 calls (tried with the window's mean) did no better than 1.2 and 10; the window mean (instead of the median)
let a burst of slow calls after a recovery lift the baseline to 0.7 s. Vegas' minimum latency
does not fit: searches differ by query (a cached query vector answers in a third of the time).

Health checks and streaming methods (reflection) are never limited: a probe must be answered
while the service sheds (issue 27: health checks took up to 1.65 s under load). Each method
has its own limit: a bulk `UpsertProducts` taking seconds must not shrink `Retrieve`'s.
Refused calls count in `shelfwise.rpc.shed`; the current limits are the gauge
`shelfwise.admission.limit`. `SHELFWISE_ADMISSION=off` turns it off.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

import grpc
from opentelemetry import metrics

from services.common import errors
from services.common.config import AdmissionSettings
from services.common.metrics import UNMEASURED_METHOD_PREFIXES, split_method

log = logging.getLogger(__name__)


# A call that has run this many baseline latencies is presumed to wait on something stalled
# and frees its slot (`AdaptiveLimit.set_aside`): during a frozen dependency calls wait for a
# stage deadline (0.5 s and more, 20 baselines of a search). So while every call waits, a
# method still starts `limit / (2 x baseline)` calls a second, about half the rate it serves
# normally, instead of refusing all but `limit` of them.
STALLED_AFTER_BASELINES = 2.0
STALLED_BEFORE_BASELINE_SECONDS = 1.0


# Fields in which a response says that the server answered without a stage or component (the
# gateway's Search and Recommend, ranking's Rank): such an answer waited on, or skipped, a
# dependency; its latency says nothing about the method's own speed.
DEGRADED_FIELDS = ("degraded_stages", "degraded_components")


def degraded(response: object) -> bool:
    return any(getattr(response, name, None) for name in DEGRADED_FIELDS)


class Slot:
    """One admitted call's place under the limit."""

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held = True


class AdaptiveLimit:
    """The concurrency limit of one method (see the module docstring). Not thread-safe: one
    event loop owns it."""

    def __init__(self, settings: AdmissionSettings, clock: Callable[[], float] = time.monotonic, name: str = "") -> None:
        self.name = name
        self._settings = settings
        self._clock = clock
        start = settings.min_limit if settings.initial_limit is None else settings.initial_limit
        self.limit = float(min(settings.max_limit, max(settings.min_limit, start)))
        self.in_flight = 0
        self.set_aside_calls = 0
        self.baseline: float | None = None  # seconds
        self.usual: float | None = None  # seconds, see hold_seconds
        self._window_started = clock()
        self._window_latencies: list[float] = []
        self._window_peak = 0
        self._window_refused = False

    def acquire(self) -> "Slot | None":
        """A slot for one call; None when `limit` calls already hold one."""
        if self.in_flight >= int(self.limit):
            self._window_refused = True
            return None
        self.in_flight += 1
        if self.in_flight > self._window_peak:
            self._window_peak = self.in_flight
        return Slot()

    def hold_seconds(self) -> float:
        """How long a call holds its slot before it is presumed stalled (see `set_aside`):
        `STALLED_AFTER_BASELINES` times the method's usual latency, which follows the baseline
        down at once but up by 2% a window at most, so a slow spell (a model server warming up
        after a restart) does not stretch the hold with it."""
        if self.usual is None:
            return STALLED_BEFORE_BASELINE_SECONDS
        return STALLED_AFTER_BASELINES * self.usual

    def set_aside(self, slot: "Slot") -> None:
        """Frees the slot of a call that has run `hold_seconds`: it waits on something stalled
        (a frozen dependency until its stage deadline), not on this server's CPU. Without
        this, a few such calls hold every slot, the server refuses everything else, and the
        breaker that would notice the stall sees too few calls to open. The call runs on; its
        latency still counts when it ends."""
        if slot.held:
            slot.held = False
            self.in_flight -= 1
            self.set_aside_calls += 1

    def release(self, slot: "Slot", seconds: float | None) -> None:
        """Ends a call; `seconds` is its latency, None for a call that says nothing about the
        method's own speed: an error (about the request, or a dependency that failed or timed
        out: its breaker and deadlines deal with that) or a degraded answer."""
        if seconds is not None:
            self._window_latencies.append(seconds)
            now = self._clock()
            if (len(self._window_latencies) >= self._settings.window_samples
                    or now - self._window_started >= self._settings.window_seconds):
                self._close_window(now)
        if slot.held:
            slot.held = False
            self.in_flight -= 1

    def retry_after_ms(self) -> int:
        """The hint sent with a refusal: about one call's unqueued latency, when a slot frees."""
        if self.baseline is None:
            return 100
        return max(1, min(1000, round(self.baseline * 1000)))

    def _close_window(self, now: float) -> None:
        settings = self._settings
        ordered = sorted(self._window_latencies)
        latency = ordered[len(ordered) // 2]  # the median: a few calls slowed by a burst do not move it
        bound = self._window_refused or self._window_peak >= int(self.limit)
        # The baseline follows a faster window at once (halfway), a slower one slowly (a
        # tenth) and only when the limit turned nobody away or sits at its floor (where it must
        # follow a method that became slower for good): a sustained overload cannot teach the
        # limit that its own queue is normal.
        if self.baseline is None:
            self.baseline = latency
        elif latency < self.baseline:
            self.baseline += (latency - self.baseline) / 2
        elif not self._window_refused or self.limit <= settings.min_limit:
            self.baseline += (latency - self.baseline) / 10
        self.usual = self.baseline if self.usual is None else min(self.baseline, self.usual * 1.02)
        ratio = latency / self.baseline if self.baseline > 0 else 1.0
        if not bound:
            pass  # the limit decided nothing in this window: no evidence for or against it
        elif ratio > settings.tolerance:
            self.limit = max(float(settings.min_limit), self.limit * max(0.5, settings.tolerance / ratio))
        else:
            self.limit = min(float(settings.max_limit), self.limit + 1.0)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: window of %d, median %.1f ms vs baseline %.1f ms, peak %d%s: limit %.2f",
                      self.name, len(ordered), latency * 1000, self.baseline * 1000, self._window_peak,
                      ", refused" if self._window_refused else "", self.limit)
        self._window_started = now
        self._window_latencies = []
        self._window_peak = self.in_flight
        self._window_refused = False


class AdmissionInterceptor(grpc.aio.ServerInterceptor):
    """Applies an `AdaptiveLimit` per unary method of the server. A refusal raises
    `errors.Overloaded`, which the error-mapping interceptor answers with RESOURCE_EXHAUSTED and
    the trailing `grpc-retry-pushback-ms` (gRPC's retry-policy hint)."""

    def __init__(self, settings: AdmissionSettings, clock: Callable[[], float] = time.perf_counter) -> None:
        self._settings = settings
        self._clock = clock
        self.limits: dict[str, AdaptiveLimit] = {}
        meter = metrics.get_meter("shelfwise.server")
        self._shed = meter.create_counter(
            "shelfwise.rpc.shed", unit="{request}",
            description="calls refused with RESOURCE_EXHAUSTED because the method was at its concurrency limit",
        )
        meter.create_observable_gauge(
            "shelfwise.admission.limit", callbacks=[self._observe_limits], unit="{request}",
            description="current adaptive concurrency limit of each method",
        )

    @classmethod
    def from_settings(cls, settings: AdmissionSettings) -> "AdmissionInterceptor | None":
        return None if settings.mode == "off" else cls(settings)

    def _observe_limits(self, _options):
        for method, limit in list(self.limits.items()):
            service, name = split_method(method)
            yield metrics.Observation(int(limit.limit), {"rpc.service": service, "rpc.method": name})

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or handler.unary_unary is None or method.startswith(UNMEASURED_METHOD_PREFIXES):
            return handler
        limit = self.limits.get(method)
        if limit is None:  # bounded: only methods the server registered get here
            limit = self.limits[method] = AdaptiveLimit(self._settings, self._clock, method)
        inner = handler.unary_unary
        clock = self._clock
        shed = self._shed
        service, name = split_method(method)

        async def admitted(request, context: grpc.aio.ServicerContext):
            slot = limit.acquire()
            if slot is None:
                shed.add(1, {"rpc.service": service, "rpc.method": name})
                raise errors.Overloaded(
                    f"{name}: this server is at its limit of {int(limit.limit)} concurrent calls; "
                    f"retry in about {limit.retry_after_ms()} ms or spread the load",
                    limit.retry_after_ms(),
                )
            started = clock()
            stalled = asyncio.get_running_loop().call_later(limit.hold_seconds(), limit.set_aside, slot)
            seconds = None
            try:
                response = await inner(request, context)
                if not degraded(response):
                    seconds = clock() - started
                return response
            except asyncio.CancelledError:
                seconds = clock() - started  # its caller gave up waiting: at least this slow
                raise
            finally:
                stalled.cancel()
                limit.release(slot, seconds)

        return grpc.unary_unary_rpc_method_handler(
            admitted,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
