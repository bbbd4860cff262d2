"""The report of `shelfwise bench search`: the measured phases side by side, one column per
configuration (full pipeline, BM25-only, full pipeline asking for facets) and the ratio of the
first two when two ran."""

from __future__ import annotations

import math
from typing import Sequence

from services.cli.bench.open_loop import Summary

FULL, BM25, FACETS = "full", "bm25", "facets"
LABELS = {FULL: "full pipeline", BM25: "BM25-only", FACETS: "full + 4 facets"}


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b and not math.isnan(a) and not math.isnan(b) else "-"


def report(summaries: Sequence[Summary], header: Sequence[str] = ()) -> str:
    """The phases side by side (full / BM25-only ratio in the last column when both ran)."""
    names = [LABELS.get(s.configuration, s.configuration) for s in summaries]
    both = len(summaries) == 2
    width = 16
    lines = list(header)
    ratio_name = f"{summaries[0].configuration} / {summaries[1].configuration}" if both else ""
    lines.append(f"{'':<26}" + "".join(f"{name:>{width}}" for name in names) + (f"{ratio_name:>{width}}" if both else ""))

    def row(label: str, values: list[float], fmt: str = "{:.1f}", ratio: bool = True) -> None:
        cells = "".join(f"{fmt.format(v):>{width}}" for v in values)
        extra = f"{_ratio(values[0], values[1]):>{width}}" if both and ratio else ""
        lines.append(f"{label:<26}{cells}{extra}")

    row("requests scheduled", [s.scheduled for s in summaries], "{:d}", ratio=False)
    row("answered OK", [s.ok for s in summaries], "{:d}", ratio=False)
    row("achieved QPS", [s.achieved_qps for s in summaries])
    for label, key in (("p50 ms", "p50_ms"), ("p95 ms", "p95_ms"), ("p99 ms", "p99_ms"), ("max ms", "max_ms"),
                       ("mean ms", "mean_ms")):
        row(label, [getattr(s, key) for s in summaries])
    codes = sorted({code for s in summaries for code in s.errors})
    row("errors", [sum(s.errors.values()) for s in summaries], "{:d}", ratio=False)
    for code in codes:
        row(f"  {code}", [s.errors.get(code, 0) for s in summaries], "{:d}", ratio=False)
        if any(code in s.error_p99_ms for s in summaries):
            row("    p99 ms", [s.error_p99_ms.get(code, float("nan")) for s in summaries], ratio=False)
    stages = sorted({stage for s in summaries for stage in s.degraded})
    row("degraded answers", [sum(s.degraded.values()) for s in summaries], "{:d}", ratio=False)
    for stage in stages:
        row(f"  {stage}", [s.degraded.get(stage, 0) for s in summaries], "{:d}", ratio=False)
    if any(s.health_ms for s in summaries):
        row("health check p99 ms", [s.health_ms[0] if s.health_ms else float("nan") for s in summaries], ratio=False)
        row("health check max ms", [s.health_ms[1] if s.health_ms else float("nan") for s in summaries], ratio=False)
    row("client send lag p99 ms", [s.send_lag_p99_ms for s in summaries], ratio=False)
    row("client send lag max ms", [s.send_lag_max_ms for s in summaries], ratio=False)
    stages = sorted({stage for s in summaries for stage in s.stage_ms})
    if stages:
        lines.append("gateway stage timings of the OK answers, p50 / p99 ms:")
        for stage in stages:
            cells = "".join(
                f"{(f'{s.stage_ms[stage][0]:.1f} / {s.stage_ms[stage][1]:.1f}' if stage in s.stage_ms else '-'):>{width}}"
                for s in summaries
            )
            lines.append(f"{'  ' + stage:<26}{cells}")
    services = sorted({service for s in summaries for service in s.cpu_ms_per_request})
    if services:
        lines.append("CPU ms per scheduled request (all threads of each service process, from /proc):")
        for service in services:
            row(f"  {service}", [s.cpu_ms_per_request.get(service, float("nan")) for s in summaries])
        row("  total", [sum(s.cpu_ms_per_request.values()) for s in summaries])
        row("  the bench's own client", [s.client_cpu_ms_per_request for s in summaries])
    return "\n".join(lines)
