"""Shared metric plumbing and the instruments of the shared runtime: duration buckets, histogram
creation, and the holders of what every server or shared client measures.

Each component builds its own small holder when it is constructed (never at import time):
`RpcMetrics` (every server, through the shared interceptor), `TritonMetrics` (the Triton client)
and `CircuitMetrics` (every circuit breaker). A service's own instruments live in that service:
`services/gateway/metrics.py`, `services/events/metrics.py`, `services/retrieval/metrics.py`.
Instruments come from the process-wide OpenTelemetry
meter provider (`services.common.tracing` installs one that exports over OTLP when
OTEL_EXPORTER_OTLP_ENDPOINT is set; tests install an in-memory reader; otherwise the API's
no-op). Creating the same instrument twice returns the one already registered, so several
servers in one process (the tests) share instruments.

Durations are histograms in milliseconds with explicit bucket boundaries from 1 ms to 10 s.
Counts use UCUM annotations (`{request}`, `{event}`, ...) as the OpenTelemetry conventions ask.
"""

from __future__ import annotations

from opentelemetry import metrics

# Upper bounds (ms): fine between 1 and 100 ms where most calls land, coarse up to 10 s.
DURATION_BUCKETS_MS: tuple[float, ...] = (
    1, 2, 5, 10, 15, 20, 30, 50, 75, 100, 150, 250, 500, 750, 1_000, 2_500, 5_000, 10_000,
)

# Health checks are probes, not traffic: no RPC metrics for them.
UNMEASURED_METHOD_PREFIXES = ("/grpc.health.v1.Health/",)


def duration_histogram(meter: metrics.Meter, name: str, description: str) -> metrics.Histogram:
    return meter.create_histogram(
        name, unit="ms", description=description, explicit_bucket_boundaries_advisory=DURATION_BUCKETS_MS
    )


def split_method(full_method: str) -> tuple[str, str]:
    """'/shelfwise.gateway.v1.GatewayService/Search' -> ('shelfwise.gateway.v1.GatewayService', 'Search')."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service, method


class RpcMetrics:
    """Per-RPC request count and latency of a gRPC server (OpenTelemetry RPC conventions).

    rpc.server.requests   counter   {request}  rpc.system, rpc.service, rpc.method, rpc.grpc.status_code
    rpc.server.duration   histogram ms         same attributes
    rpc.grpc.status_code is the numeric gRPC code (0 = OK, 3 = INVALID_ARGUMENT, ...), as on spans.
    """

    def __init__(self) -> None:
        meter = metrics.get_meter("shelfwise.server")
        self._requests = meter.create_counter(
            "rpc.server.requests", unit="{request}", description="RPCs handled, by method and final gRPC status"
        )
        self._duration = duration_histogram(
            meter, "rpc.server.duration", "time from receiving an RPC to its final status, by method and status"
        )

    @staticmethod
    def measured(full_method: str) -> bool:
        return not full_method.startswith(UNMEASURED_METHOD_PREFIXES)

    def record(self, full_method: str, status_code: int, milliseconds: float) -> None:
        service, method = split_method(full_method)
        attributes = {
            "rpc.system": "grpc",
            "rpc.service": service,
            "rpc.method": method,
            "rpc.grpc.status_code": status_code,
        }
        self._requests.add(1, attributes)
        self._duration.record(milliseconds, attributes)


class TritonMetrics:
    """Triton client calls, one point per attempt.

    shelfwise.triton.request.duration  histogram  ms       model, outcome (ok | retry | unavailable | deadline)
    shelfwise.triton.retries           counter    {retry}  model
    """

    OK, RETRY, UNAVAILABLE, DEADLINE = "ok", "retry", "unavailable", "deadline"

    def __init__(self) -> None:
        meter = metrics.get_meter("shelfwise.triton")
        self._duration = duration_histogram(
            meter, "shelfwise.triton.request.duration",
            "one inference attempt against Triton, by model and outcome (ok, retry, unavailable, deadline)",
        )
        self._retries = meter.create_counter(
            "shelfwise.triton.retries", unit="{retry}", description="inference attempts retried after a transient failure"
        )

    def record_attempt(self, model: str, outcome: str, milliseconds: float) -> None:
        self._duration.record(milliseconds, {"model": model, "outcome": outcome})
        if outcome == self.RETRY:
            self._retries.add(1, {"model": model})


class CircuitMetrics:
    """Circuit breakers (`services.common.circuit`): the gateway's per downstream service, the
    Triton client's per model ("triton:<model>").

    shelfwise.circuit.state        gauge    1               circuit   (0 closed, 1 half-open, 2 open)
    shelfwise.circuit.transitions  counter  {transition}    circuit, state (the state entered)
    """

    STATE_VALUES = {"closed": 0, "half_open": 1, "open": 2}

    def __init__(self) -> None:
        meter = metrics.get_meter("shelfwise.circuit")
        self._state = meter.create_gauge(
            "shelfwise.circuit.state", unit="1",
            description="state of each circuit breaker: 0 closed (calls go), 1 half-open (one probe), 2 open (failing fast)",
        )
        self._transitions = meter.create_counter(
            "shelfwise.circuit.transitions", unit="{transition}",
            description="circuit breaker state changes, by breaker and the state entered",
        )

    def transition(self, circuit: str, state: str) -> None:
        self._state.set(self.STATE_VALUES[state], {"circuit": circuit})
        self._transitions.add(1, {"circuit": circuit, "state": state})
