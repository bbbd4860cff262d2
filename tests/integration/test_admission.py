"""Admission control on a real gRPC server (port 0, the shared bootstrap): calls beyond a
method's concurrency limit are refused at once with RESOURCE_EXHAUSTED, a message naming the
limit and gRPC's `grpc-retry-pushback-ms` hint; health checks are answered while the method
sheds; with admission off, every call is admitted."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.channels import create_channel
from services.common.config import AdmissionSettings, SecuritySettings
from services.common.server import RETRY_PUSHBACK_KEY, Listening, start_server

NO_AUTH = SecuritySettings.from_env({})
METHOD = "/test.Slow/Wait"


async def _slow_server(admission: AdmissionSettings, gate: asyncio.Event, started: list):
    """A server whose Wait call returns once `gate` is set (each call noted in `started`)."""

    async def wait(request: health_pb2.HealthCheckRequest, context) -> health_pb2.HealthCheckResponse:
        started.append(request.service)
        await gate.wait()
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    handler = grpc.method_handlers_generic_handler("test.Slow", {"Wait": grpc.unary_unary_rpc_method_handler(
        wait,
        request_deserializer=health_pb2.HealthCheckRequest.FromString,
        response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
    )})
    running = await start_server(
        register=lambda server: server.add_generic_rpc_handlers((handler,)),
        service_names=["test.Slow"],
        listening=Listening(port=0, admission=admission),
        security=NO_AUTH,
    )
    await running.set_serving(True)
    return running


def _wait_stub(channel):
    return channel.unary_unary(
        METHOD,
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )


async def _outcome(call) -> tuple[str, float, str, dict]:
    started = time.perf_counter()
    try:
        await call
        return "OK", time.perf_counter() - started, "", {}
    except grpc.aio.AioRpcError as error:
        return error.code().name, time.perf_counter() - started, error.details(), dict(error.trailing_metadata() or ())


async def _until(condition, what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds}s waiting for {what}")
        await asyncio.sleep(0.01)


async def test_calls_beyond_the_limit_are_refused_at_once_with_a_retry_hint_and_health_answers():
    gate, started = asyncio.Event(), []
    running = await _slow_server(AdmissionSettings(min_limit=2, max_limit=2), gate, started)
    try:
        async with create_channel(f"127.0.0.1:{running.port}") as channel:
            wait = _wait_stub(channel)
            admitted = [asyncio.ensure_future(_outcome(wait(health_pb2.HealthCheckRequest(service=f"a{n}"), timeout=30)))
                        for n in range(2)]
            await _until(lambda: len(started) == 2, "the two admitted calls to start")
            refused = await asyncio.gather(*(
                _outcome(wait(health_pb2.HealthCheckRequest(service=f"r{n}"), timeout=30)) for n in range(6)
            ))
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            gate.set()
            finished = await asyncio.gather(*admitted)
    finally:
        await running.stop()

    assert [code for code, *_ in finished] == ["OK", "OK"]
    assert sorted(started) == ["a0", "a1"]  # the refused calls never reached the handler
    for code, seconds, details, trailing in refused:
        assert code == "RESOURCE_EXHAUSTED"
        assert seconds < 5.0  # at once, not after the admitted calls (which waited for the gate)
        assert details.startswith("Wait: this server is at its limit of 2 concurrent calls; retry in about")
        assert int(trailing[RETRY_PUSHBACK_KEY]) > 0
    assert health.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_client_that_retries_refused_calls_gets_through_once_a_slot_frees():
    """`create_channel(retry_refused=True)`: gRPC's retry policy waits the server's pushback
    and tries again; the call is answered when the slot it waited for frees."""
    gate, started = asyncio.Event(), []
    running = await _slow_server(AdmissionSettings(min_limit=1, max_limit=1), gate, started)
    try:
        async with create_channel(f"127.0.0.1:{running.port}") as plain, \
                create_channel(f"127.0.0.1:{running.port}", retry_refused=True) as retrying:
            first = asyncio.ensure_future(_outcome(_wait_stub(plain)(health_pb2.HealthCheckRequest(service="first"),
                                                                     timeout=30)))
            await _until(lambda: started == ["first"], "the first call to start")
            refused = await _outcome(_wait_stub(plain)(health_pb2.HealthCheckRequest(service="plain"), timeout=30))
            retried = asyncio.ensure_future(_outcome(_wait_stub(retrying)(
                health_pb2.HealthCheckRequest(service="retried"), timeout=30)))
            await asyncio.sleep(0.05)  # refused once at least, waiting for its next attempt
            gate.set()
            results = await asyncio.gather(first, retried)
    finally:
        await running.stop()
    assert refused[0] == "RESOURCE_EXHAUSTED"
    assert [code for code, *_ in results] == ["OK", "OK"]
    assert started == ["first", "retried"]


async def test_admission_off_admits_everything():
    gate, started = asyncio.Event(), []
    running = await _slow_server(AdmissionSettings(mode="off", min_limit=1, max_limit=1), gate, started)
    try:
        async with create_channel(f"127.0.0.1:{running.port}") as channel:
            wait = _wait_stub(channel)
            calls = [asyncio.ensure_future(_outcome(wait(health_pb2.HealthCheckRequest(service=str(n)), timeout=30)))
                     for n in range(5)]
            await _until(lambda: len(started) == 5, "all five calls to start")
            gate.set()
            results = await asyncio.gather(*calls)
    finally:
        await running.stop()
    assert [code for code, *_ in results] == ["OK"] * 5


@pytest.mark.parametrize("mode", ["adaptive", "off"])
def test_every_service_gets_admission_settings_from_the_environment(mode):
    from services.common.config import ServerSettings

    gateway = ServerSettings.from_env("gateway", {"SHELFWISE_ADMISSION": mode})
    ranking = ServerSettings.from_env("ranking", {"SHELFWISE_ADMISSION": mode})
    assert gateway.admission.mode == ranking.admission.mode == mode
    assert gateway.admission.min_limit == 1 and ranking.admission.min_limit == AdmissionSettings().min_limit
