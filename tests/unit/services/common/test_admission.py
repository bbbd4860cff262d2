"""The adaptive concurrency limit (`services.common.admission.AdaptiveLimit`), on an injected
clock: it starts at its floor, grows one per window while latency holds and the limit binds,
shrinks in proportion when latency rises over the baseline, and learns the baseline only from
windows that turned nobody away (or at its floor)."""

from __future__ import annotations

import pytest

from services.common.admission import AdaptiveLimit, AdmissionSettings

SETTINGS = AdmissionSettings(min_limit=2, max_limit=10, tolerance=1.5, window_samples=4, window_seconds=100.0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def window(limit: AdaptiveLimit, latency: float, concurrency: int | None = None, calls: int = 4) -> None:
    """One window of `calls` finished calls taking `latency` seconds each, with `concurrency`
    calls kept running (the limit when None); the last call closes the window."""
    concurrency = int(limit.limit) if concurrency is None else concurrency
    held = []
    for _ in range(calls):
        while len(held) < concurrency and (slot := limit.acquire()) is not None:
            held.append(slot)
        limit.release(held.pop(), latency)
    for slot in held:
        limit.release(slot, None)


def test_it_starts_at_its_floor_and_refuses_beyond_it():
    limit = AdaptiveLimit(SETTINGS, Clock())
    slots = [limit.acquire() for _ in range(3)]
    assert slots[0] is not None and slots[1] is not None and slots[2] is None
    limit.release(slots[0], 0.01)
    assert limit.acquire() is not None


def test_it_grows_by_one_per_window_while_latency_holds_and_the_limit_binds():
    limit = AdaptiveLimit(SETTINGS, Clock())
    for expected in (3, 4, 5):
        window(limit, 0.020)
        assert limit.limit == expected
    for _ in range(20):
        window(limit, 0.020)
    assert limit.limit == SETTINGS.max_limit


def test_an_unbound_limit_does_not_grow():
    limit = AdaptiveLimit(SETTINGS, Clock())
    for _ in range(5):
        window(limit, 0.020, concurrency=1)
    assert limit.limit == SETTINGS.min_limit


def test_latency_over_the_tolerance_shrinks_the_limit_in_proportion_but_not_below_the_floor():
    limit = AdaptiveLimit(SETTINGS, Clock())
    for _ in range(6):
        window(limit, 0.020)
    assert limit.limit == 8
    overloaded = int(limit.limit) + 1  # calls are turned away: the baseline holds
    window(limit, 0.040, concurrency=overloaded)  # twice the baseline: 8 * 1.5 / 2
    assert limit.limit == pytest.approx(6.0)
    window(limit, 0.200, concurrency=overloaded)  # ten times: at most halved
    assert limit.limit == pytest.approx(3.0)
    window(limit, 0.200, concurrency=overloaded)
    assert limit.limit == SETTINGS.min_limit


def test_latency_within_the_tolerance_is_no_reason_to_shrink():
    limit = AdaptiveLimit(SETTINGS, Clock())
    window(limit, 0.020)
    window(limit, 0.029)
    assert limit.limit == 4


def test_the_baseline_follows_the_traffic_the_limit_admits_in_full():
    limit = AdaptiveLimit(SETTINGS, Clock())
    window(limit, 0.020, concurrency=1)
    for _ in range(40):  # busier, nobody turned away: the method's normal latency is now 26 ms
        window(limit, 0.026, concurrency=1)
    assert limit.baseline == pytest.approx(0.026, abs=0.0005)


def test_windows_that_turned_calls_away_do_not_raise_the_baseline():
    limit = AdaptiveLimit(SETTINGS, Clock())
    for _ in range(6):
        window(limit, 0.020)
    for _ in range(10):  # a sustained overload: every window refuses calls
        window(limit, 0.027, concurrency=int(limit.limit) + 1)
    assert limit.baseline == pytest.approx(0.020)


def test_at_its_floor_the_limit_relearns_a_slower_baseline():
    """A method that became slower for good (a bigger catalogue) is not held at the floor
    for ever: at the floor nothing queues behind the limit, so the baseline follows."""
    limit = AdaptiveLimit(SETTINGS, Clock())
    window(limit, 0.010)
    for _ in range(40):
        window(limit, 0.050)
    assert limit.baseline > 0.050 / SETTINGS.tolerance  # 50 ms is within the tolerance again
    assert limit.limit > SETTINGS.min_limit


def test_a_faster_window_lowers_the_baseline_even_while_calls_are_turned_away():
    limit = AdaptiveLimit(SETTINGS, Clock())
    window(limit, 0.040)
    window(limit, 0.020, concurrency=int(limit.limit) + 1)
    assert limit.baseline == pytest.approx(0.030)  # halfway at once


def test_a_call_without_a_latency_frees_its_slot_and_leaves_the_window_alone():
    limit = AdaptiveLimit(SETTINGS, Clock())
    for _ in range(10):
        limit.release(limit.acquire(), None)
    assert limit.baseline is None and limit.limit == SETTINGS.min_limit and limit.in_flight == 0


def test_a_window_closes_after_its_time_with_fewer_calls():
    clock = Clock()
    limit = AdaptiveLimit(SETTINGS, clock)
    slot = limit.acquire()
    clock.now += SETTINGS.window_seconds
    limit.release(slot, 0.020)
    assert limit.baseline == pytest.approx(0.020)


def test_the_window_median_is_not_moved_by_a_few_slow_calls():
    limit = AdaptiveLimit(SETTINGS, Clock())
    for _ in range(6):
        window(limit, 0.020)
    overloaded = int(limit.limit) + 1
    held = [limit.acquire() for _ in range(overloaded)]
    for slot, latency in zip(held, [0.020, 0.020, 0.9, 0.020]):  # one straggler of a burst
        limit.release(slot, latency)
    for slot in held[4:]:
        if slot is not None:
            limit.release(slot, None)
    assert limit.limit == 9  # grew: the median held


def test_the_retry_hint_is_about_one_unqueued_call():
    limit = AdaptiveLimit(SETTINGS, Clock())
    assert limit.retry_after_ms() == 100  # nothing measured yet
    window(limit, 0.0234)
    assert limit.retry_after_ms() == 23


def test_a_stalled_call_frees_its_slot_once_and_still_counts_when_it_ends():
    limit = AdaptiveLimit(SETTINGS, Clock())
    assert limit.hold_seconds() == 1.0  # nothing measured yet
    window(limit, 0.020, concurrency=1)
    assert limit.hold_seconds() == pytest.approx(0.040)  # two baselines
    stalled, running = limit.acquire(), limit.acquire()
    assert limit.acquire() is None
    limit.set_aside(stalled)
    limit.set_aside(stalled)
    assert limit.in_flight == 1 and limit.set_aside_calls == 1
    other = limit.acquire()
    assert other is not None  # the stalled call no longer blocks the others
    for slot in (running, other):
        limit.release(slot, 0.020)
    limit.release(stalled, 2.0)  # its slot was freed already; its latency counts
    assert limit.in_flight == 0
    assert sorted(limit._window_latencies) == pytest.approx([0.020, 0.020, 2.0])


def test_a_slow_spell_does_not_stretch_the_hold_with_the_baseline():
    limit = AdaptiveLimit(SETTINGS, Clock())
    window(limit, 0.020, concurrency=1)
    for _ in range(10):  # slow but served in full: the baseline follows, the hold hardly
        window(limit, 0.300, concurrency=1)
    assert limit.baseline > 0.150
    assert limit.hold_seconds() == pytest.approx(2 * 0.020 * 1.02 ** 10)
    for _ in range(5):  # faster again: the usual latency follows the baseline down
        window(limit, 0.010, concurrency=1)
    assert limit.hold_seconds() < 2 * 0.020


def test_settings_come_from_the_environment_and_refuse_nonsense():
    settings = AdmissionSettings.from_env({
        "SHELFWISE_ADMISSION": "off", "SHELFWISE_ADMISSION_MIN_LIMIT": "3", "SHELFWISE_ADMISSION_MAX_LIMIT": "9",
        "SHELFWISE_ADMISSION_TOLERANCE": "2",
    })
    assert (settings.mode, settings.min_limit, settings.max_limit, settings.tolerance) == ("off", 3, 9, 2.0)
    assert AdmissionSettings.from_env({}) == AdmissionSettings(initial_limit=20)
    assert AdmissionSettings.from_env({"SHELFWISE_ADMISSION_MAX_LIMIT": "8"}).initial_limit == 8  # within the ceiling
    assert AdmissionSettings.from_env({}, "gateway").min_limit == 1  # the edge sheds down to one call
    with pytest.raises(ValueError, match="SHELFWISE_ADMISSION must be one of adaptive, off"):
        AdmissionSettings.from_env({"SHELFWISE_ADMISSION": "on"})
    with pytest.raises(ValueError, match="MAX_LIMIT \\(2\\) must be at least"):
        AdmissionSettings.from_env({"SHELFWISE_ADMISSION_MIN_LIMIT": "4", "SHELFWISE_ADMISSION_MAX_LIMIT": "2"})


def test_a_limit_starts_at_its_initial_value_within_floor_and_ceiling():
    assert AdaptiveLimit(AdmissionSettings(min_limit=1, max_limit=256, initial_limit=20)).limit == 20
    assert AdaptiveLimit(AdmissionSettings(min_limit=4, max_limit=256, initial_limit=2)).limit == 4
    assert AdaptiveLimit(AdmissionSettings(min_limit=1, max_limit=256)).limit == 1  # none: the floor
