"""The circuit breaker's state machine, on an injected clock."""

from __future__ import annotations

import asyncio

import pytest

from services.common.circuit import (
    CLOSED, HALF_OPEN, OPEN, Breakers, CircuitBreaker, CircuitOpen, CircuitSettings,
)
from services.common.errors import DeadlineExceeded, InvalidArgument, Overloaded, Unavailable


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def seen() -> list:
    return []


@pytest.fixture
def breaker(clock, seen) -> CircuitBreaker:
    return CircuitBreaker("ranking", CircuitSettings(failure_threshold=3, open_seconds=5.0), clock,
                          observer=lambda name, state: seen.append((name, state)))


async def fail(error=Unavailable("down")):
    raise error


async def answer():
    return "ok"


async def failures(breaker: CircuitBreaker, count: int, error=None) -> None:
    for _ in range(count):
        with pytest.raises((Unavailable, DeadlineExceeded)):
            await breaker.call(lambda: fail(error or Unavailable("down")))


async def test_opens_after_the_threshold_of_consecutive_failures_and_then_fails_fast(breaker, seen):
    await failures(breaker, 2)
    assert breaker.state == CLOSED
    await failures(breaker, 1, DeadlineExceeded("slow"))
    assert breaker.state == OPEN
    assert seen == [("ranking", OPEN)]
    called = []

    async def tracked():
        called.append(1)

    with pytest.raises(CircuitOpen) as raised:
        await breaker.call(tracked)
    assert not called  # the dependency was not called at all
    assert isinstance(raised.value, Unavailable)  # so every existing degradation path applies
    assert raised.value.message.startswith("ranking: circuit open")
    assert breaker.rejected == 1


async def test_a_success_resets_the_count_of_consecutive_failures(breaker):
    await failures(breaker, 2)
    assert await breaker.call(answer) == "ok"
    await failures(breaker, 2)
    assert breaker.state == CLOSED


async def test_an_error_about_the_request_proves_the_dependency_alive(breaker):
    await failures(breaker, 2)
    with pytest.raises(InvalidArgument):
        await breaker.call(lambda: fail(InvalidArgument("query", "must not be empty")))
    await failures(breaker, 2)
    assert breaker.state == CLOSED


async def test_a_dependency_shedding_load_is_busy_not_down(breaker, clock, seen):
    """Its admission control refused the call at once: it answered, so the refusal counts as
    a sign of life, and a half-open probe it refuses closes the breaker (issue 27: breakers of
    healthy services opened under load)."""
    await failures(breaker, 2)
    for _ in range(10):
        with pytest.raises(Overloaded):
            await breaker.call(lambda: fail(Overloaded("ranking: at its limit", 20)))
    assert breaker.state == CLOSED
    await failures(breaker, 3)
    clock.now += 5
    with pytest.raises(Overloaded):
        await breaker.call(lambda: fail(Overloaded("ranking: at its limit", 20)))
    assert breaker.state == CLOSED
    assert seen == [("ranking", OPEN), ("ranking", HALF_OPEN), ("ranking", CLOSED)]


async def test_a_deadline_cut_short_by_the_caller_is_no_verdict_on_the_dependency(breaker, clock):
    for _ in range(5):
        with pytest.raises(DeadlineExceeded):
            await breaker.call(lambda: fail(DeadlineExceeded("caller's deadline")), judge_deadline=False)
    assert breaker.state == CLOSED
    await failures(breaker, 3)
    clock.now += 5
    with pytest.raises(DeadlineExceeded):  # an unjudged probe leaves the next call to probe
        await breaker.call(lambda: fail(DeadlineExceeded("caller's deadline")), judge_deadline=False)
    assert breaker.state == HALF_OPEN
    with pytest.raises(Unavailable):  # an outage is a verdict whatever the deadline
        await breaker.call(lambda: fail(Unavailable("down")), judge_deadline=False)
    assert breaker.state == OPEN


async def test_after_the_open_period_one_probe_goes_through_and_its_success_closes(breaker, clock, seen):
    await failures(breaker, 3)
    clock.now += 4.9
    assert breaker.state == OPEN
    clock.now += 0.1
    assert breaker.state == HALF_OPEN
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # everyone else still fails fast while it runs
    breaker.success()
    assert breaker.state == CLOSED
    assert [state for _, state in seen] == [OPEN, HALF_OPEN, CLOSED]
    assert breaker.allow() and breaker.allow()


async def test_a_failed_probe_opens_again_for_a_whole_period(breaker, clock, seen):
    await failures(breaker, 3)
    clock.now += 5
    await failures(breaker, 1)
    assert breaker.state == OPEN
    clock.now += 4.9
    with pytest.raises(CircuitOpen):
        await breaker.call(answer)
    clock.now += 0.1
    assert await breaker.call(answer) == "ok"
    assert [state for _, state in seen] == [OPEN, HALF_OPEN, OPEN, HALF_OPEN, CLOSED]


async def test_a_cancelled_probe_lets_the_next_call_probe(breaker, clock):
    await failures(breaker, 3)
    clock.now += 5
    started = asyncio.Event()

    async def hangs():
        started.set()
        await asyncio.sleep(60)

    probe = asyncio.create_task(breaker.call(hangs))
    await started.wait()
    with pytest.raises(CircuitOpen):
        await breaker.call(answer)
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    assert breaker.state == HALF_OPEN
    assert await breaker.call(answer) == "ok"
    assert breaker.state == CLOSED


async def test_breakers_are_made_once_per_name_with_shared_settings(clock, seen):
    breakers = Breakers(CircuitSettings(failure_threshold=1, open_seconds=1), lambda n, s: seen.append((n, s)),
                        prefix="triton:", clock=clock)
    assert breakers["ctr_head"] is breakers["ctr_head"]
    await failures(breakers["ctr_head"], 1)
    assert breakers["ctr_head"].state == OPEN and breakers["text_encoder"].state == CLOSED
    assert seen == [("triton:ctr_head", OPEN)]


def test_settings_come_from_the_environment_with_defaults():
    assert CircuitSettings.from_env({}) == CircuitSettings(failure_threshold=5, open_seconds=0.5)
    assert CircuitSettings.from_env(
        {"SHELFWISE_CIRCUIT_FAILURES": "2", "SHELFWISE_CIRCUIT_OPEN_SECONDS": "0.5"}
    ) == CircuitSettings(2, 0.5)
    with pytest.raises(ValueError, match="SHELFWISE_CIRCUIT_FAILURES"):
        CircuitSettings.from_env({"SHELFWISE_CIRCUIT_FAILURES": "0"})


async def test_each_transition_sets_the_state_metric_of_its_breaker(clock):
    from services.common.metrics import CircuitMetrics
    from tests.support.telemetry import metric_points

    def state(name: str) -> float:
        (point,) = [p for p in metric_points("shelfwise.circuit.state") if p.attributes["circuit"] == name]
        return point.value

    breaker = CircuitBreaker("metric-test", CircuitSettings(failure_threshold=1, open_seconds=1), clock,
                             observer=CircuitMetrics().transition)
    await failures(breaker, 1)
    assert state("metric-test") == 2
    clock.now += 1
    assert breaker.allow() and state("metric-test") == 1
    breaker.success()
    assert state("metric-test") == 0
    entered = {p.attributes["state"]: p.value for p in metric_points("shelfwise.circuit.transitions")
               if p.attributes["circuit"] == "metric-test"}
    assert entered == {"open": 1, "half_open": 1, "closed": 1}
