"""The open loop of `shelfwise bench search`, apart from what it calls: requests sent at fixed
arrival times whether or not the earlier ones have answered, latency from each request's
scheduled time (so coordinated omission cannot hide a stall), at most `max_in_flight`
outstanding (an arrival beyond that is counted as CLIENT_OVERFLOW, not queued), and the
figures of one phase (`Summary`: QPS, latency percentiles, errors per status, the client's own
lag, CPU per request, the latency of each error status and of health checks sent beside it)."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Sequence

OK = "OK"
OVERFLOW = "CLIENT_OVERFLOW"  # arrival while max_in_flight calls were outstanding: not sent


# --------------------------------------------------------------------------- schedule and run


def arrival_offsets(rate: float, duration: float) -> list[float]:
    """Seconds from the start at which each request is due: evenly spaced, `rate` per second."""
    if rate <= 0 or duration <= 0:
        raise ValueError("rate and duration must be > 0")
    return [n / rate for n in range(int(round(rate * duration)))]


@dataclass(frozen=True)
class Outcome:
    status: str
    degraded: tuple[str, ...] = ()
    stages: tuple[tuple[str, float], ...] = ()  # (stage, ms) as the gateway timed them


@dataclass(frozen=True)
class Sample:
    due: float  # seconds from the phase start the request was scheduled at
    latency_ms: float  # completion - scheduled time (0 for an overflow: never sent)
    status: str
    degraded: tuple[str, ...] = ()
    send_lag_ms: float = 0.0  # how late the client sent it
    stages: tuple[tuple[str, float], ...] = ()


@dataclass
class PhaseResult:
    samples: list[Sample]
    elapsed: float  # phase start to the last completion
    rate: float
    duration: float


async def run_open_loop(
    call: Callable[[int], Awaitable[Outcome]],
    rate: float,
    duration: float,
    max_in_flight: int,
    clock: Callable[[], float] = time.perf_counter,
) -> PhaseResult:
    """Calls `call(n)` at each arrival time, never waiting for earlier calls; an arrival that
    finds `max_in_flight` calls outstanding is recorded as OVERFLOW and not sent."""
    samples: list[Sample] = []
    tasks: set[asyncio.Task] = set()
    in_flight = 0
    start = clock()

    async def one(number: int, due: float) -> None:
        nonlocal in_flight
        lag = clock() - (start + due)
        try:
            outcome = await call(number)
        except Exception as error:  # a bug in the call must not stop the schedule
            outcome = Outcome(f"CLIENT_ERROR:{type(error).__name__}")
        finally:
            in_flight -= 1
        latency = (clock() - (start + due)) * 1000
        samples.append(Sample(due, latency, outcome.status, outcome.degraded, lag * 1000, outcome.stages))

    for number, due in enumerate(arrival_offsets(rate, duration)):
        delay = start + due - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        if in_flight >= max_in_flight:
            samples.append(Sample(due, 0.0, OVERFLOW, (), (clock() - start - due) * 1000))
            continue
        in_flight += 1  # counted now: tasks created in one burst must see each other
        task = asyncio.create_task(one(number, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    while tasks:
        await asyncio.gather(*list(tasks))
    return PhaseResult(sorted(samples, key=lambda s: s.due), clock() - start, rate, duration)


# --------------------------------------------------------------------------- figures


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile: the smallest value with at least `share` of all at or below
    it (p99 of 3000 values is the 2970th smallest). NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass
class Summary:
    configuration: str
    scheduled: int
    ok: int
    achieved_qps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    errors: dict[str, int]
    degraded: dict[str, int]
    send_lag_p99_ms: float
    send_lag_max_ms: float
    elapsed_s: float
    cpu_ms_per_request: dict[str, float] = field(default_factory=dict)
    # Per gateway stage: [p50, p99] ms over the OK answers.
    stage_ms: dict[str, list[float]] = field(default_factory=dict)
    # Per error status the server answered (not CLIENT_OVERFLOW): p99 ms from the scheduled
    # time; how fast a shed request (RESOURCE_EXHAUSTED) learns that it was shed.
    error_p99_ms: dict[str, float] = field(default_factory=dict)
    # Health checks sent beside the load (`probe_health`): p99 and max ms.
    health_ms: list[float] = field(default_factory=list)
    # CPU of the load generator itself (this process, all threads), ms per scheduled request:
    # on a small machine it competes with the services it measures.
    client_cpu_ms_per_request: float = float("nan")


def summarize(configuration: str, result: PhaseResult, cpu_seconds: dict[str, float] | None = None,
              health_latencies_ms: Sequence[float] = ()) -> Summary:
    ok = [s.latency_ms for s in result.samples if s.status == OK]
    error_latencies: dict[str, list[float]] = {}
    for sample in result.samples:
        if sample.status not in (OK, OVERFLOW):
            error_latencies.setdefault(sample.status, []).append(sample.latency_ms)
    errors = Counter(s.status for s in result.samples if s.status != OK)
    degraded = Counter(stage for s in result.samples for stage in s.degraded)
    lags = [s.send_lag_ms for s in result.samples if s.status != OVERFLOW]
    scheduled = len(result.samples)
    stage_values: dict[str, list[float]] = {}
    for sample in result.samples:
        if sample.status == OK:
            for stage, milliseconds in sample.stages:
                stage_values.setdefault(stage, []).append(milliseconds)
    return Summary(
        configuration=configuration,
        scheduled=scheduled,
        ok=len(ok),
        achieved_qps=len(ok) / result.elapsed if result.elapsed > 0 else 0.0,
        p50_ms=percentile(ok, 0.50),
        p95_ms=percentile(ok, 0.95),
        p99_ms=percentile(ok, 0.99),
        max_ms=max(ok, default=float("nan")),
        mean_ms=sum(ok) / len(ok) if ok else float("nan"),
        errors=dict(sorted(errors.items())),
        degraded=dict(sorted(degraded.items())),
        send_lag_p99_ms=percentile(lags, 0.99),
        send_lag_max_ms=max(lags, default=float("nan")),
        elapsed_s=result.elapsed,
        cpu_ms_per_request={
            service: 1000 * seconds / scheduled for service, seconds in sorted((cpu_seconds or {}).items())
        } if scheduled else {},
        stage_ms={stage: [percentile(v, 0.50), percentile(v, 0.99)] for stage, v in sorted(stage_values.items())},
        error_p99_ms={status: percentile(v, 0.99) for status, v in sorted(error_latencies.items())},
        health_ms=[percentile(health_latencies_ms, 0.99), max(health_latencies_ms, default=float("nan"))]
        if health_latencies_ms else [],
    )


async def probe_health(check: Callable[[], Awaitable[object]], interval: float, latencies_ms: list[float],
                       clock: Callable[[], float] = time.perf_counter) -> None:
    """Calls `check()` every `interval` seconds until cancelled and appends each latency (a
    failed check counts with the time it took): what a load balancer's probe sees under the
    load."""
    while True:
        started = clock()
        try:
            await check()
        except Exception:  # a failed probe is still a latency to report
            pass
        latencies_ms.append((clock() - started) * 1000)
        await asyncio.sleep(max(0.0, interval - (clock() - started)))
