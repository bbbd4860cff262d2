"""The open-loop load generator's logic: arrival schedule, sends that never wait for earlier
answers, latency from the scheduled time, the in-flight bound, percentiles, the report, the
loopback rule and the choice of request ids that put a request in an experiment arm.

No assertion here is about speed: the fake calls sleep or block for set times, and only the
bounds those times imply are checked."""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from services.cli.bench.open_loop import (
    OK,
    OVERFLOW,
    Outcome,
    PhaseResult,
    Sample,
    arrival_offsets,
    percentile,
    probe_health,
    run_open_loop,
    summarize,
)
from services.cli.bench.search import (
    BENCH_EXPERIMENT,
    BM25,
    FULL,
    NotLoopback,
    check_loopback,
    repeated_share,
    report,
    request_id_for_arm,
    served_arm,
)
from services.gateway.experiments import parse_experiments


def test_arrivals_are_evenly_spaced_at_the_rate_for_the_duration():
    offsets = arrival_offsets(50, 2)
    assert len(offsets) == 100
    assert offsets[0] == 0 and offsets[1] == pytest.approx(0.02) and offsets[-1] == pytest.approx(1.98)
    with pytest.raises(ValueError):
        arrival_offsets(0, 1)


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))  # 1..100
    assert percentile(values, 0.50) == 50
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert percentile([7.0], 0.99) == 7.0
    assert percentile(list(reversed(values)), 0.95) == 95
    assert math.isnan(percentile([], 0.5))


async def test_every_request_is_sent_on_schedule_even_while_earlier_ones_are_unanswered():
    started: list[int] = []

    async def slow(number: int) -> Outcome:
        started.append(number)
        await asyncio.sleep(0.3)  # far longer than the 10 ms between arrivals
        return Outcome(OK)

    result = await run_open_loop(slow, rate=100, duration=0.1, max_in_flight=100)
    assert sorted(started) == list(range(10))
    assert [s.status for s in result.samples] == [OK] * 10
    # Latency counts from the scheduled time, so it is at least the call's own 0.3 s.
    assert all(s.latency_ms >= 300 for s in result.samples)


async def test_latency_counts_from_the_scheduled_time_when_the_client_sends_late():
    async def call(number: int) -> Outcome:
        if number == 0:
            time.sleep(0.15)  # blocks the event loop: the next arrivals cannot be sent on time
        return Outcome(OK)

    result = await run_open_loop(call, rate=100, duration=0.05, max_in_flight=100)
    late = [s for s in result.samples if s.due > 0]
    assert len(late) == 4
    for sample in late:
        assert sample.send_lag_ms >= 150 - sample.due * 1000 - 1
        assert sample.latency_ms >= sample.send_lag_ms


async def test_arrivals_beyond_the_in_flight_bound_are_errors_not_queued():
    release = asyncio.Event()
    calls = []

    async def stuck(number: int) -> Outcome:
        calls.append(number)
        await release.wait()
        return Outcome(OK)

    async def release_later():
        await asyncio.sleep(0.2)
        release.set()

    releaser = asyncio.create_task(release_later())
    result = await run_open_loop(stuck, rate=100, duration=0.1, max_in_flight=3)
    await releaser
    statuses = [s.status for s in result.samples]
    assert statuses.count(OK) == 3 and statuses.count(OVERFLOW) == 7
    assert sorted(calls) == [0, 1, 2]


async def test_a_failing_call_is_counted_and_the_schedule_goes_on():
    async def call(number: int) -> Outcome:
        if number % 2:
            raise RuntimeError("boom")
        return Outcome("DEADLINE_EXCEEDED" if number == 4 else OK, ("ranking",) if number == 2 else ())

    summary = summarize(FULL, await run_open_loop(call, rate=100, duration=0.06, max_in_flight=10))
    assert summary.scheduled == 6 and summary.ok == 2
    assert summary.errors == {"CLIENT_ERROR:RuntimeError": 3, "DEADLINE_EXCEEDED": 1}
    assert summary.degraded == {"ranking": 1}


def test_summary_figures_and_cpu_per_request():
    samples = [Sample(i / 10, float(i + 1), OK) for i in range(10)] + [Sample(1.0, 0.0, OVERFLOW)]
    summary = summarize(BM25, PhaseResult(samples, elapsed=2.0, rate=10, duration=1.1), {"retrieval": 1.1})
    assert summary.ok == 10 and summary.achieved_qps == 5.0
    assert (summary.p50_ms, summary.p99_ms, summary.max_ms) == (5.0, 10.0, 10.0)
    assert summary.errors == {OVERFLOW: 1}
    assert summary.cpu_ms_per_request == {"retrieval": pytest.approx(100.0)}


def test_each_error_status_gets_its_p99_latency_and_health_checks_theirs():
    samples = ([Sample(i / 100, 2.0 + i, "RESOURCE_EXHAUSTED") for i in range(100)]
               + [Sample(1.0, 500.0, OK), Sample(1.1, 0.0, OVERFLOW)])
    summary = summarize(FULL, PhaseResult(samples, 2.0, 100, 1.1), None, [1.0] * 99 + [30.0])
    assert summary.error_p99_ms == {"RESOURCE_EXHAUSTED": 100.0}  # no latency for a call never sent
    assert summary.health_ms == [1.0, 30.0]
    text = report([summary])
    assert next(line for line in text.splitlines() if line.strip().startswith("p99 ms") and "100.0" in line)
    assert next(line for line in text.splitlines() if line.startswith("health check max ms")).split()[-1] == "30.0"


async def test_health_is_probed_at_its_interval_and_a_failed_probe_still_counts():
    calls = []

    async def check():
        calls.append(time.perf_counter())
        if len(calls) == 2:
            raise RuntimeError("refused")

    latencies: list[float] = []
    probing = asyncio.create_task(probe_health(check, 0.02, latencies))
    await asyncio.sleep(0.11)
    probing.cancel()
    await asyncio.gather(probing, return_exceptions=True)
    assert 3 <= len(latencies) <= 7 and len(latencies) in (len(calls), len(calls) - 1)
    assert all(latency >= 0 for latency in latencies)


def test_report_puts_both_configurations_side_by_side_with_ratios():
    full = summarize(FULL, PhaseResult([Sample(0, 40.0, OK), Sample(0.1, 0.0, "UNAVAILABLE")], 1.0, 2, 1))
    bm25 = summarize(BM25, PhaseResult([Sample(0, 10.0, OK), Sample(0.1, 10.0, OK)], 1.0, 2, 1))
    text = report([full, bm25], ["header line"])
    lines = text.splitlines()
    assert lines[0] == "header line"
    assert "full pipeline" in lines[1] and "BM25-only" in lines[1] and "full / bm25" in lines[1]
    p99 = next(line for line in lines if line.startswith("p99 ms"))
    assert p99.split() == ["p99", "ms", "40.0", "10.0", "4.00x"]
    unavailable = next(line for line in lines if "UNAVAILABLE" in line)
    assert unavailable.split() == ["UNAVAILABLE", "1", "0"]


@pytest.mark.parametrize("address", ["127.0.0.1:50051", "127.0.0.9:1", "localhost:50051", "[::1]:50051"])
def test_loopback_addresses_are_accepted(address):
    assert check_loopback(address) == address


@pytest.mark.parametrize("address", ["10.0.0.5:50051", "0.0.0.0:50051", "gateway.shop.example:443", "[2001:db8::1]:1"])
def test_other_addresses_are_refused_with_the_reason(address):
    with pytest.raises(NotLoopback, match="loopback"):
        check_loopback(address)


def test_request_ids_land_in_the_arm_they_are_chosen_for():
    experiments = parse_experiments(BENCH_EXPERIMENT)
    for arm in (FULL, BM25):
        for number in range(20):
            request_id = request_id_for_arm(arm, "run", number, experiments)
            assert experiments.assign("", "", request_id).arm.name == arm
    assert request_id_for_arm(FULL, "a", 1) != request_id_for_arm(FULL, "a", 2)


def test_the_bm25_arm_is_lexical_in_retrieval_order_without_query_understanding():
    arm = parse_experiments(BENCH_EXPERIMENT).get("bench").arm(BM25).policy
    assert (arm.retrieval, arm.ranking, arm.query_understanding) == ("lexical", "retrieval", False)
    full = parse_experiments(BENCH_EXPERIMENT).get("bench").arm(FULL).policy
    assert (full.retrieval, full.ranking, full.query_understanding) == ("hybrid", "model", True)


def test_served_arm_is_read_from_the_model_version():
    assert served_arm("ctr_head/1,query_understanding=rules/1,experiment=bench/bm25") == BM25
    assert served_arm("ctr_head/1,query_understanding=rules/1") == ""


def test_repeated_share_counts_queries_seen_earlier_in_the_stream():
    assert repeated_share(["a", "b", "a", "c", "b", "d"], first=2) == 0.5  # a, c, b, d: a and b repeat
    assert repeated_share(["x"], first=1) == 0.0


def test_stage_timings_of_ok_answers_are_summarised_per_stage():
    samples = [Sample(0, 10.0, OK, stages=(("retrieval", float(n)), ("ranking", 1.0))) for n in range(1, 101)]
    samples.append(Sample(1, 2000.0, "DEADLINE_EXCEEDED", stages=(("retrieval", 1999.0),)))
    summary = summarize(FULL, PhaseResult(samples, elapsed=1.0, rate=100, duration=1))
    assert summary.stage_ms == {"ranking": [1.0, 1.0], "retrieval": [50.0, 99.0]}
    assert "retrieval" in report([summary]) and "50.0 / 99.0" in report([summary])
