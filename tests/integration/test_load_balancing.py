"""Calls between services spread over a service's replicas per request (round robin over every
address the target resolves to), and servers recycle connections so that clients find
replicas added later. Real gRPC servers on free ports."""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.channels import create_channel
from services.common.config import SecuritySettings, ServerSettings
from services.common.server import Listening, start_server

NO_AUTH = SecuritySettings.from_env({})


async def _replica(name: str, served: Counter, max_connection_age_seconds: float = 0.0, peers: set | None = None,
                   call_seconds: float = 0.0, **server_options):
    """A server whose Check answers SERVING after `call_seconds`, counts the calls it got under
    `name` and notes each caller's address in `peers` (a new connection comes from a new client
    port)."""

    class CountingHealth(health_pb2_grpc.HealthServicer):
        async def Check(self, request, context):
            if call_seconds:
                await asyncio.sleep(call_seconds)
            served[name] += 1
            if peers is not None:
                peers.add(context.peer())
            return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    # The counting servicer is registered under its own service name, so it does not clash with
    # the health service every server has.
    handler = grpc.method_handlers_generic_handler(
        "test.Counting",
        {"Check": grpc.unary_unary_rpc_method_handler(
            CountingHealth().Check,
            request_deserializer=health_pb2.HealthCheckRequest.FromString,
            response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
        )},
    )
    return await start_server(
        register=lambda server: server.add_generic_rpc_handlers((handler,)),
        service_names=["test.Counting"],
        listening=Listening(port=0, max_connection_age_seconds=max_connection_age_seconds, **server_options),
        security=NO_AUTH,
    )


def _check(channel):
    return channel.unary_unary(
        "/test.Counting/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )


async def test_calls_to_a_replicated_service_go_round_robin_not_all_to_the_first():
    served: Counter = Counter()
    replicas = [await _replica(name, served) for name in ("a", "b", "c")]
    try:
        target = "ipv4:" + ",".join(f"127.0.0.1:{r.port}" for r in replicas)
        async with create_channel(target, security=NO_AUTH) as channel:
            check = _check(channel)
            for _ in range(30):
                await check(health_pb2.HealthCheckRequest(), timeout=5)
        # pick_first, gRPC's default, would have sent all 30 to "a".
        assert set(served) == {"a", "b", "c"}
        assert min(served.values()) >= 5
    finally:
        for replica in replicas:
            await replica.server.stop(0)


@pytest.mark.parametrize("max_age, connections", [(0.3, "several"), (0.0, "one")])
async def test_a_server_recycles_connections_and_calls_go_on_across_the_reconnect(max_age, connections):
    served: Counter = Counter()
    peers: set[str] = set()
    replica = await _replica("a", served, max_connection_age_seconds=max_age, peers=peers)
    try:
        async with create_channel(f"127.0.0.1:{replica.port}", security=NO_AUTH) as channel:
            check = _check(channel)
            for _ in range(25):  # 2.5 s of calls
                await check(health_pb2.HealthCheckRequest(), timeout=5)
                await asyncio.sleep(0.1)
        assert served["a"] == 25  # no call lost across a reconnect
        # GOAWAY after ~0.3 s (plus gRPC's jitter of up to 10%), so the client reconnected
        # (from new ports); without a maximum age, one connection throughout.
        assert (len(peers) >= 3) if connections == "several" else (len(peers) == 1)
    finally:
        await replica.server.stop(0)


async def test_a_call_longer_than_the_old_grace_survives_the_connection_being_aged_out():
    """A catalogue upsert can encode for a minute; the connection's maximum age must not cut it.
    Scaled down: connections age out after 0.3 s, each call takes 1 s. With a grace shorter than
    the call (5 s against a minute was the bug) the call in flight fails UNAVAILABLE."""
    served: Counter = Counter()
    cut = await _replica("cut", served, max_connection_age_seconds=0.3, call_seconds=1.0,
                         connection_age_grace_seconds=0.1)
    kept = await _replica("kept", served, max_connection_age_seconds=0.3, call_seconds=1.0)
    try:
        async with create_channel(f"127.0.0.1:{cut.port}", security=NO_AUTH) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await _check(channel)(health_pb2.HealthCheckRequest(), timeout=5)
            assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        async with create_channel(f"127.0.0.1:{kept.port}", security=NO_AUTH) as channel:
            for _ in range(3):  # each one outlives the connection it started on
                await _check(channel)(health_pb2.HealthCheckRequest(), timeout=5)
        assert served["kept"] == 3
    finally:
        await cut.server.stop(0)
        await kept.server.stop(0)


@pytest.mark.parametrize("environ, expected", [({}, 300.0), ({"SHELFWISE_MAX_CONNECTION_AGE_SECONDS": "0"}, 0.0)])
def test_connection_age_is_a_setting(environ, expected):
    assert ServerSettings.from_env("retrieval", environ).max_connection_age_seconds == expected


async def test_the_gateway_spreads_searches_over_two_retrieval_replicas(system):
    """A second retrieval replica over the session's database, and a gateway whose retrieval
    address lists both: searches reach both replicas."""
    from shelfwise.gateway.v1 import gateway_pb2, gateway_pb2_grpc

    from services.gateway.config import GatewaySettings
    from services.gateway.server import create_server as create_gateway
    from services.retrieval.config import RetrievalSettings
    from services.retrieval.server import create_server as create_retrieval

    second = await create_retrieval(RetrievalSettings.from_env(system.environ), port=0)
    first_index, second_index = system.servers["retrieval"].app, second.app
    environ = dict(system.environ, SHELFWISE_RETRIEVAL_ADDRESS=f"ipv4:{system.address('retrieval')},127.0.0.1:{second.port}")
    gateway = await create_gateway(GatewaySettings.from_env(environ), port=0)

    def lookups(index):  # each text search looks its query vector up once
        return index.query_cache.hits + index.query_cache.misses

    before = lookups(first_index), lookups(second_index)
    try:
        async with create_channel(f"127.0.0.1:{gateway.port}", security=NO_AUTH) as channel:
            stub = gateway_pb2_grpc.GatewayServiceStub(channel)
            for n in range(12):
                await stub.Search(gateway_pb2.SearchRequest(query=f"green tea {n}", page_size=3), timeout=30)
        served = lookups(first_index) - before[0], lookups(second_index) - before[1]
        assert sum(served) == 12
        assert min(served) >= 3, served
    finally:
        await gateway.stop(grace=1.0)
        await second.stop(grace=1.0)
