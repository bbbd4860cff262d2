"""Client channels to other Shelfwise services, created the same way everywhere, and the
health check that tells whether a service is ready.

A channel carries the process's own credentials: its token (SHELFWISE_AUTH_TOKEN[_FILE]) on
every call, and TLS with its certificate when SHELFWISE_TLS_CA_FILE is set, so that calls
between services authenticate like any caller's."""

from __future__ import annotations

import asyncio
import json
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.auth import channel_credentials, token_interceptors
from services.common.config import DEFAULT_MAX_MESSAGE_BYTES, SecuritySettings
from services.common.server import grpc_options
from services.common.tracing import instrument_libraries

ROUND_ROBIN = {"loadBalancingConfig": [{"round_robin": {}}]}
# A call refused by the server's admission control (RESOURCE_EXHAUSTED, nothing done) is tried
# again after the server's `grpc-retry-pushback-ms`, at most three more times; when many calls
# fail, gRPC's retry throttling stops the retries (a token bucket: each failure takes one of
# ten tokens, each success gives back a tenth), so a shed server is not hit harder.
RETRY_REFUSED = {
    "methodConfig": [{
        "name": [{}],
        "retryPolicy": {
            "maxAttempts": 4, "initialBackoff": "0.05s", "maxBackoff": "2s", "backoffMultiplier": 2,
            "retryableStatusCodes": ["RESOURCE_EXHAUSTED"],
        },
    }],
    "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
}


def create_channel(
    address: str, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, security: SecuritySettings | None = None,
    retry_refused: bool = False,
) -> grpc.aio.Channel:
    """An aio channel with tracing (instrumented before creation), size limits and this
    process's credentials (`security` defaults to SecuritySettings.from_env()).

    `retry_refused`: calls refused for load are retried as the server asks (`RETRY_REFUSED`),
    what a client of a busy service should do; off where the caller must see the refusal (a
    load generator, a gateway stage that degrades instead) or where RESOURCE_EXHAUSTED can
    only mean a message too large."""
    instrument_libraries()
    security = SecuritySettings.from_env() if security is None else security
    options = grpc_options(max_message_bytes) + [
        # Reconnect quickly after a downstream restart instead of backing off for minutes.
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2000),
        # Calls go round robin over every address the target resolves to (a headless Service's
        # ready pods, or a list like ipv4:10.0.0.1:50053,10.0.0.2:50053), not all to the first:
        # a replica added to a busy service takes its share of requests, not only of the
        # connections opened after it started. One address: the same as the default.
        ("grpc.service_config", json.dumps({**ROUND_ROBIN, **(RETRY_REFUSED if retry_refused else {})})),
    ]
    interceptors = token_interceptors(security.own_token) if security.own_token else None
    credentials = channel_credentials(security)
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(address, credentials, options=options, interceptors=interceptors)


async def is_serving(stub: health_pb2_grpc.HealthStub, timeout: float = 1.0) -> bool:
    try:
        response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout)
    except grpc.aio.AioRpcError:
        return False
    return response.status == health_pb2.HealthCheckResponse.SERVING


async def wait_until_serving(address: str, timeout: float, still_running=lambda: True) -> None:
    """Polls grpc.health.v1 until SERVING; raises TimeoutError, or RuntimeError as soon as
    `still_running()` turns false (the process died)."""
    async with create_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + timeout
        while not await is_serving(stub):
            if not still_running():
                raise RuntimeError(f"the service at {address} exited")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{address} was not SERVING after {timeout:.0f}s")
            await asyncio.sleep(0.2)
