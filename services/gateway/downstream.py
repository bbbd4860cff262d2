"""The gateway's clients of the other services. gRPC failures become domain errors here, so
the composition logic decides what to do about them without knowing about gRPC."""

from __future__ import annotations

import grpc
from shelfwise.events.v1 import events_pb2_grpc
from shelfwise.query_understanding.v1 import query_understanding_pb2_grpc as qu_pb2_grpc
from shelfwise.ranking.v1 import ranking_pb2_grpc
from shelfwise.retrieval.v1 import retrieval_pb2_grpc

from services.common import errors
from services.common.channels import create_channel
from services.gateway.config import GatewaySettings


def domain_error(stage: str, error: grpc.aio.AioRpcError) -> errors.ShelfwiseError:
    code, details = error.code(), error.details() or error.code().name
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return errors.InvalidArgument.passed_on(details)
    if code == grpc.StatusCode.NOT_FOUND:
        return errors.NotFound(details)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return errors.DeadlineExceeded(f"{stage}: did not answer in time")
    return errors.Unavailable(f"{stage}: {code.name.lower()}: {details}")


class Downstream:
    """Stubs of the four services; `call` runs one RPC with a timeout and maps its failure."""

    def __init__(self, settings: GatewaySettings):
        size = settings.server.max_message_bytes
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

    @staticmethod
    async def call(stage: str, method, request, timeout: float):
        try:
            return await method(request, timeout=timeout)
        except grpc.aio.AioRpcError as error:
            raise domain_error(stage, error) from None

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()
