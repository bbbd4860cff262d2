"""Metric instruments of every service, defined in one place: names, units, buckets, attributes.

Each component builds its own small holder when it is constructed (never at import time):
`RpcMetrics` (every server, through the shared interceptor), `GatewayMetrics`, `TritonMetrics`,
`EventsMetrics`, `RetrievalMetrics` and `CircuitMetrics`. Instruments come from the process-wide OpenTelemetry
meter provider (`services.common.tracing` installs one that exports over OTLP when
OTEL_EXPORTER_OTLP_ENDPOINT is set; tests install an in-memory reader; otherwise the API's
no-op). Creating the same instrument twice returns the one already registered, so several
servers in one process (the tests) share instruments.

Durations are histograms in milliseconds with explicit bucket boundaries from 1 ms to 10 s.
Counts use UCUM annotations (`{request}`, `{event}`, ...) as the OpenTelemetry conventions ask;
the two gateway counters that predate this module keep their unit `1`.
"""

from __future__ import annotations

from opentelemetry import metrics

# Upper bounds (ms): fine between 1 and 100 ms where most calls land, coarse up to 10 s.
DURATION_BUCKETS_MS: tuple[float, ...] = (
    1, 2, 5, 10, 15, 20, 30, 50, 75, 100, 150, 250, 500, 750, 1_000, 2_500, 5_000, 10_000,
)

# Health checks are probes, not traffic: no RPC metrics for them.
UNMEASURED_METHOD_PREFIXES = ("/grpc.health.v1.Health/",)


def _duration_histogram(meter: metrics.Meter, name: str, description: str) -> metrics.Histogram:
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
        self._duration = _duration_histogram(
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
        self._stage_duration = _duration_histogram(
            meter, "shelfwise.gateway.stage.duration",
            "time the gateway spent on one stage (query_understanding, retrieval, ranking) of a request",
        )

    def record_stages(self, rpc: str, timings) -> None:
        """`timings`: the StageTiming messages (stage, milliseconds) of one response."""
        for timing in timings:
            self._stage_duration.record(timing.milliseconds, {"rpc": rpc, "stage": timing.stage})


class TritonMetrics:
    """Triton client calls, one point per attempt.

    shelfwise.triton.request.duration  histogram  ms       model, outcome (ok | retry | unavailable | deadline)
    shelfwise.triton.retries           counter    {retry}  model
    """

    OK, RETRY, UNAVAILABLE, DEADLINE = "ok", "retry", "unavailable", "deadline"

    def __init__(self) -> None:
        meter = metrics.get_meter("shelfwise.triton")
        self._duration = _duration_histogram(
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


class EventsMetrics:
    """What the events service stored or refused, counted in events (not requests).

    shelfwise.events.ingested  counter  {event}  kind (impression | interaction), duplicate (true | false)
    shelfwise.events.failed    counter  {event}  kind, status (the gRPC status name the caller got)
    shelfwise.events.write.retries  counter  {retry}  error (why the attempt failed: the exception type)
    """

    def __init__(self) -> None:
        meter = metrics.get_meter("shelfwise.events")
        self._ingested = meter.create_counter(
            "shelfwise.events.ingested", unit="{event}",
            description="events written, by kind; duplicate=true for event ids already stored (idempotent no-ops)",
        )
        self._failed = meter.create_counter(
            "shelfwise.events.failed", unit="{event}", description="events of rejected batches, by kind and status"
        )
        self._write_retries = meter.create_counter(
            "shelfwise.events.write.retries", unit="{retry}",
            description="batch writes retried after losing the database connection, by error type",
        )

    def ingested(self, kind: str, accepted: int, duplicates: int) -> None:
        if accepted:
            self._ingested.add(accepted, {"kind": kind, "duplicate": False})
        if duplicates:
            self._ingested.add(duplicates, {"kind": kind, "duplicate": True})

    def failed(self, kind: str, count: int, status: str) -> None:
        if count:
            self._failed.add(count, {"kind": kind, "status": status})

    def write_retried(self, error: str) -> None:
        self._write_retries.add(1, {"error": error})


class RetrievalMetrics:
    """The retrieval index.

    shelfwise.retrieval.products  gauge    {product}  -   (products in the index now)
    shelfwise.retrieval.upserted  counter  {product}  outcome (inserted | updated)
    shelfwise.retrieval.deleted   counter  {product}  -
    shelfwise.retrieval.dense_skipped counter {search} reason (overload | encoder_unavailable):
                                  text searches answered from BM25 alone
    """

    def __init__(self) -> None:
        meter = metrics.get_meter("shelfwise.retrieval")
        self._products = meter.create_gauge(
            "shelfwise.retrieval.products", unit="{product}", description="products in the retrieval index"
        )
        self._upserted = meter.create_counter(
            "shelfwise.retrieval.upserted", unit="{product}", description="products upserted, by outcome"
        )
        self._deleted = meter.create_counter(
            "shelfwise.retrieval.deleted", unit="{product}", description="products deleted from the index"
        )
        self._dense_skipped = meter.create_counter(
            "shelfwise.retrieval.dense_skipped", unit="{search}",
            description="text searches answered from BM25 alone, by reason (overload: no query vector in time)",
        )

    def index_size(self, products: int) -> None:
        self._products.set(products)

    def upserted(self, inserted: int, updated: int) -> None:
        if inserted:
            self._upserted.add(inserted, {"outcome": "inserted"})
        if updated:
            self._upserted.add(updated, {"outcome": "updated"})

    def deleted(self, count: int) -> None:
        if count:
            self._deleted.add(count)

    def dense_skipped(self, reason: str) -> None:
        self._dense_skipped.add(1, {"reason": reason})


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
