"""gRPC adapter of the gateway: hands each call and the caller's time left to the composer."""

from __future__ import annotations

from shelfwise.gateway.v1 import gateway_pb2_grpc

from services.gateway.composer import Composer


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(self, composer: Composer):
        self._composer = composer

    async def Search(self, request, context):
        return await self._composer.search(request, context.time_remaining())

    async def Recommend(self, request, context):
        return await self._composer.recommend(request, context.time_remaining())

    async def Track(self, request, context):
        return await self._composer.track(request, context.time_remaining())

    async def Suggest(self, request, context):
        return await self._composer.suggest(request, context.time_remaining())
