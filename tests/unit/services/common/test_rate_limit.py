"""Per-caller token buckets: bursts, refill, separate callers, exemptions, bounded memory."""

from __future__ import annotations

import pytest

from services.common.rate_limit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_caller_gets_its_burst_then_the_rate():
    clock = Clock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
    assert [limiter.allow("shop") for _ in range(4)] == [True, True, True, False]
    clock.now += 0.5  # one call's worth at 2/s
    assert [limiter.allow("shop") for _ in range(2)] == [True, False]
    clock.now += 60  # refills to the burst, not beyond
    assert sum(limiter.allow("shop") for _ in range(10)) == 3


def test_callers_have_separate_buckets_and_exempt_principals_none():
    limiter = RateLimiter(rate=1.0, burst=1, exempt=("gateway",), clock=Clock())
    assert limiter.allow("principal:shop", "shop") and not limiter.allow("principal:shop", "shop")
    assert limiter.allow("principal:other", "other")
    assert all(limiter.allow("principal:gateway", "gateway") for _ in range(100))


def test_memory_is_bounded_by_forgetting_the_least_recent_callers():
    limiter = RateLimiter(rate=1.0, burst=1, clock=Clock(), max_callers=2)
    for caller in ("a", "b", "c"):
        assert limiter.allow(caller)
    assert len(limiter._buckets) == 2 and "a" not in limiter._buckets


@pytest.mark.parametrize("rate, burst", [(0, 1), (1, 0)])
def test_a_limit_that_would_refuse_everything_is_a_configuration_error(rate, burst):
    with pytest.raises(ValueError):
        RateLimiter(rate=rate, burst=burst)
