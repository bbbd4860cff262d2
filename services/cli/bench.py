"""`shelfwise bench search`: latency of Search through the whole stack.

Closed loop, one call at a time, cycling through a fixed set of shopper queries; prints
p50/p95/p99 of the end-to-end latency and the median of each stage as the gateway timed it.
Without --address it starts its own system (embedded PostgreSQL, five services on free ports,
demo catalogue) and also reports how long that took to become ready.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

BENCH_QUERIES = (
    "red running shoes under $50",
    "something to drink with steak",
    "noise cancelling headphones",
    "dark roast coffee",
    "绿茶",
    "2 person tent",
    "gift for a coffee lover",
    "wireles earbuds",
    "stainless steel cookware set",
    "face moisturizer for dry skin",
)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


async def measure(address: str, calls: int, warmup: int) -> dict:
    from shelfwise.gateway.v1 import gateway_pb2, gateway_pb2_grpc

    from services.common.channels import create_channel

    latencies: list[float] = []
    stages: dict[str, list[float]] = {}
    async with create_channel(address) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        for number in range(warmup + calls):
            query = BENCH_QUERIES[number % len(BENCH_QUERIES)]
            started = time.perf_counter()
            response = await stub.Search(gateway_pb2.SearchRequest(query=query, page_size=10), timeout=10)
            elapsed = (time.perf_counter() - started) * 1000
            if number >= warmup:
                latencies.append(elapsed)
                for timing in response.timings:
                    stages.setdefault(timing.stage, []).append(timing.milliseconds)
    return {"latencies": latencies, "stages": stages}


def report(result: dict) -> str:
    latencies = result["latencies"]
    lines = [
        f"Search end to end over {len(latencies)} calls (closed loop, concurrency 1):",
        f"  p50 {percentile(latencies, 0.50):.1f} ms   p95 {percentile(latencies, 0.95):.1f} ms   "
        f"p99 {percentile(latencies, 0.99):.1f} ms   mean {statistics.fmean(latencies):.1f} ms   "
        f"max {max(latencies):.1f} ms",
        "  median per stage (gateway's view): "
        + ", ".join(f"{stage} {statistics.median(values):.1f} ms" for stage, values in result["stages"].items()),
    ]
    return "\n".join(lines)


async def bench_search(address: str | None, calls: int, warmup: int, model_repository: Path) -> None:
    if address is not None:
        print(report(await measure(address, calls, warmup)))
        return
    from services.cli.local_system import EmbeddedPostgres, LocalSystem, free_port_environment
    from services.cli.main import demo_catalog_path, import_catalog

    with tempfile.TemporaryDirectory(prefix="shelfwise-bench-") as directory:
        started = time.monotonic()
        postgres = EmbeddedPostgres(Path(directory) / "postgres")
        url = postgres.start()
        system = LocalSystem(url, model_repository.resolve(), Path(directory) / "logs", environ=free_port_environment())
        try:
            await system.start()
            serving = time.monotonic() - started
            await import_catalog(demo_catalog_path(), system.address("retrieval"), progress=False)
            print(f"system SERVING in {serving:.1f}s; demo catalogue imported at {time.monotonic() - started:.1f}s "
                  f"({os.cpu_count()} CPUs)")
            print(report(await measure(system.address("gateway"), calls, warmup)))
        finally:
            system.stop()
            postgres.stop()
