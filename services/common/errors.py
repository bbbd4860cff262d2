"""Domain errors and the one table that maps them to gRPC status codes.

Domain modules raise these (they never import grpc); `services.common.server` applies the
mapping to every RPC in one interceptor, so callers always get a clear status and message and
never a stack trace.
"""

from __future__ import annotations


class ShelfwiseError(Exception):
    """Base class of every error a caller may see. `message` is shown to the caller as is."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ShelfwiseError):
    """Bad input: the message names the field and the rule it broke."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule

    @classmethod
    def passed_on(cls, message: str) -> "InvalidArgument":
        """A downstream service's INVALID_ARGUMENT, passed to our caller unchanged."""
        field, _, rule = message.partition(": ")
        return cls(field, rule) if rule else cls("request", message)


class NotFound(ShelfwiseError):
    """An id that the request names does not exist."""


class Unavailable(ShelfwiseError):
    """A dependency (database, model server, downstream service) cannot be reached."""


class DeadlineExceeded(ShelfwiseError):
    """The work did not finish within the caller's deadline."""


class Overloaded(Unavailable):
    """Refused at once because the server (or a dependency) is at its concurrency limit;
    `retry_after_ms` is the hint sent to the caller (`grpc-retry-pushback-ms`). An Unavailable,
    so every existing degradation path applies; circuit breakers do not count it as a failure:
    the dependency answered."""

    def __init__(self, message: str, retry_after_ms: int) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms
