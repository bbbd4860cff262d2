"""The gateway's clients of the other services. gRPC failures become domain errors here, so
the composition logic decides what to do about them without knowing about gRPC.

Each downstream service has a circuit breaker (`services.common.circuit`, named after the
stage: query_understanding, retrieval, ranking, events). After repeated UNAVAILABLE or
DEADLINE_EXCEEDED answers the gateway stops calling that service for a while and fails the
stage at once with `CircuitOpen` (an `Unavailable`): the stage degrades immediately instead of
costing every request its full stage deadline, and a struggling service gets room to recover.
One probe per open period finds out when it is back."""

from __future__ import annotations

from dataclasses import asdict

import grpc
from shelfwise.events.v1 import events_pb2_grpc
from shelfwise.query_understanding.v1 import query_understanding_pb2_grpc as qu_pb2_grpc
from shelfwise.ranking.v1 import ranking_pb2_grpc
from shelfwise.retrieval.v1 import retrieval_pb2_grpc

from services.common import errors
from services.common.channels import create_channel
from services.common.circuit import Breakers
from services.common.config import DEFAULT_MAX_MESSAGE_BYTES
from services.common.metrics import CircuitMetrics
from services.common.server import RETRY_PUSHBACK_KEY
from services.gateway.config import GatewaySettings


def domain_error(stage: str, error: grpc.aio.AioRpcError) -> errors.ShelfwiseError:
    code, details = error.code(), error.details() or error.code().name
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return errors.InvalidArgument.passed_on(details)
    if code == grpc.StatusCode.NOT_FOUND:
        return errors.NotFound(details)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return errors.DeadlineExceeded(f"{stage}: did not answer in time")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return errors.Overloaded(f"{stage}: {details}", retry_after_ms(error))
    return errors.Unavailable(f"{stage}: {code.name.lower()}: {details}")


def retry_after_ms(error: grpc.aio.AioRpcError, default: int = 100) -> int:
    """The dependency's `grpc-retry-pushback-ms` hint, passed on to our caller."""
    for key, value in error.trailing_metadata() or ():
        if key == RETRY_PUSHBACK_KEY:
            try:
                return max(0, int(value))
            except ValueError:
                break
    return default


class Downstream:
    """Stubs of the four services; `call` runs one RPC with a timeout, through the stage's
    breaker, and maps its failure."""

    def __init__(self, settings: GatewaySettings):
        self.breakers = Breakers(settings.circuit, CircuitMetrics().transition)
        # A stage's own deadline: a call cut shorter by the caller's deadline that runs out is
        # no verdict on the service (see CircuitBreaker.call).
        self._stage_limits = asdict(settings.deadlines)
        # Not the gateway's own (small) request limit: retrieval's answers carry hundreds of
        # products, and a Rank request as many.
        size = DEFAULT_MAX_MESSAGE_BYTES
        self._channels = [
            create_channel(settings.query_understanding_address, size),
            create_channel(settings.retrieval_address, size),
            create_channel(settings.ranking_address, size),
            create_channel(settings.events_address, size),
        ]
        self.query_understanding = qu_pb2_grpc.QueryUnderstandingServiceStub(self._channels[0])
        self.retrieval = retrieval_pb2_grpc.RetrievalServiceStub(self._channels[1])
        self.ranking = ranking_pb2_grpc.RankingServiceStub(self._channels[2])
        self.events = events_pb2_grpc.EventsServiceStub(self._channels[3])

    async def call(self, stage: str, method, request, timeout: float):
        judge = timeout >= self._stage_limits.get(stage, 0.0)
        return await self.breakers[stage].call(lambda: self._call(stage, method, request, timeout), judge)

    @staticmethod
    async def _call(stage: str, method, request, timeout: float):
        try:
            return await method(request, timeout=timeout)
        except grpc.aio.AioRpcError as error:
            raise domain_error(stage, error) from None

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()
