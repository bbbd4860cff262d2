"""The gateway's own metric instruments (names, units, attributes); the shared plumbing is in
services/common/metrics.py. The two gateway counters that predate the UCUM annotations keep
their unit `1`."""

from __future__ import annotations

from opentelemetry import metrics

from services.common.metrics import duration_histogram


class GatewayMetrics:
    """The gateway's own signals.

    shelfwise.gateway.degraded_responses  counter        1             rpc, stage
    shelfwise.gateway.impressions_failed  counter        1             -
    shelfwise.gateway.impressions_pending up-down count  {impression}  -   (background sends in flight)
    shelfwise.gateway.impressions_buffered up-down count {impression}  -   (waiting to be sent again)
    shelfwise.gateway.impressions_dropped counter        {impression}  reason (buffer_full | rejected | shutdown)
    shelfwise.gateway.stage.duration      histogram      ms            rpc, stage
    """

    def __init__(self) -> None:
        meter = metrics.get_meter("shelfwise.gateway")
        self.degraded_responses = meter.create_counter(
            "shelfwise.gateway.degraded_responses", unit="1",
            description="Search/Recommend responses answered with a stage or part bypassed, by stage",
        )
        self.impressions_failed = meter.create_counter(
            "shelfwise.gateway.impressions_failed", unit="1", description="impressions that could not be logged"
        )
        self.impressions_pending = meter.create_up_down_counter(
            "shelfwise.gateway.impressions_pending", unit="{impression}",
            description="impressions handed to background sending and not yet sent or given up",
        )
        self.impressions_buffered = meter.create_up_down_counter(
            "shelfwise.gateway.impressions_buffered", unit="{impression}",
            description="impressions whose send failed transiently, waiting in the gateway to be sent again",
        )
        self.impressions_dropped = meter.create_counter(
            "shelfwise.gateway.impressions_dropped", unit="{impression}",
            description="impressions given up: resend buffer full, refused by the events service, or left at shutdown",
        )
        self._stage_duration = duration_histogram(
            meter, "shelfwise.gateway.stage.duration",
            "time the gateway spent on one stage (query_understanding, retrieval, ranking) of a request",
        )

    def record_response(self, rpc: str, timings, degraded) -> None:
        """`timings`: the StageTiming messages (stage, milliseconds) of one response;
        `degraded`: the stages it was answered without."""
        for stage in degraded:
            self.degraded_responses.add(1, {"rpc": rpc, "stage": stage})
        for timing in timings:
            self._stage_duration.record(timing.milliseconds, {"rpc": rpc, "stage": timing.stage})
