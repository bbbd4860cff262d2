"""The events service's metric instruments (names, units, attributes); the shared plumbing is in
services/common/metrics.py."""

from __future__ import annotations

from opentelemetry import metrics


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
