"""Caller authentication and per-caller rate limits on a real server (the events service over
the session's PostgreSQL): with auth on, unauthenticated calls are refused, health checks
stay open, the service's own channels authenticate, mTLS works, and no token reaches a log
record or a span."""

from __future__ import annotations

import logging
import os
import subprocess
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from unittest import mock

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from shelfwise.events.v1 import events_pb2, events_pb2_grpc

from services.common.channels import create_channel, wait_until_serving
from services.common.config import SecuritySettings
from services.events.config import EventsSettings
from services.events.server import create_server
from tests.support.telemetry import metric_points

SHOP_TOKEN = f"shop-{uuid.uuid4().hex}"
GATEWAY_TOKEN = f"gateway-{uuid.uuid4().hex}"
RANKING_TOKEN = f"ranking-{uuid.uuid4().hex}"
OPERATOR_TOKEN = f"operator-{uuid.uuid4().hex}"
NO_CREDENTIALS = SecuritySettings()


@asynccontextmanager
async def events_server(postgres_url: str, **environ: str):
    """The events service, its security read from `environ` as in a deployed pod."""
    with mock.patch.dict(os.environ, environ):
        running = await create_server(EventsSettings.from_env({"SHELFWISE_DATABASE_URL": postgres_url}), port=0)
    try:
        yield running
    finally:
        await running.stop()


def token_environ(tmp_path: Path, **extra: str) -> dict[str, str]:
    tokens = tmp_path / "tokens"
    tokens.write_text(
        f"# principal token role\nshop {SHOP_TOKEN} caller\ngateway {GATEWAY_TOKEN} service\n"
        f"ranking {RANKING_TOKEN} service\noperator {OPERATOR_TOKEN} admin\n"
    )
    return {"SHELFWISE_AUTH": "token", "SHELFWISE_AUTH_TOKENS_FILE": str(tokens), **extra}


def metrics_request() -> events_pb2.GetMetricsRequest:
    return events_pb2.GetMetricsRequest(group_by=events_pb2.METRICS_GROUPING_REQUEST, request_id="none")


def client(token: str | None) -> SecuritySettings:
    return SecuritySettings(own_token=token) if token else NO_CREDENTIALS


async def test_unauthenticated_calls_are_refused_when_auth_is_on(postgres_url, tmp_path):
    async with events_server(postgres_url, **token_environ(tmp_path)) as running:
        address = f"127.0.0.1:{running.port}"
        async with create_channel(address, security=NO_CREDENTIALS) as channel:
            stub = events_pb2_grpc.EventsServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.GetMetrics(metrics_request())
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "authorization: Bearer <token>" in refused.value.details()
            # Streaming RPCs too, before the first message is read.
            with pytest.raises(grpc.aio.AioRpcError) as refused_stream:
                async for _ in stub.StreamEvents(iter([events_pb2.StreamEventsRequest(sequence=1)])):
                    pass
            assert refused_stream.value.code() == grpc.StatusCode.UNAUTHENTICATED
            # Reflection describes the whole API: for authenticated operators only.
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused_reflection:
                async for _ in reflection.ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")])
                ):
                    pass
            assert refused_reflection.value.code() == grpc.StatusCode.UNAUTHENTICATED
            # Kubelet's gRPC probes send no token: health stays open.
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert health.status == health_pb2.HealthCheckResponse.SERVING


async def test_unknown_token_is_refused_without_echoing_it(postgres_url, tmp_path):
    wrong = f"wrong-{uuid.uuid4().hex}"
    async with events_server(postgres_url, **token_environ(tmp_path)) as running:
        async with create_channel(f"127.0.0.1:{running.port}", security=client(wrong)) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await events_pb2_grpc.EventsServiceStub(channel).GetMetrics(metrics_request())
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert wrong not in refused.value.details() and "not valid" in refused.value.details()


async def test_configured_callers_and_the_services_own_channels_authenticate(postgres_url, tmp_path):
    async with events_server(postgres_url, **token_environ(tmp_path)) as running:
        address = f"127.0.0.1:{running.port}"
        for token in (GATEWAY_TOKEN, OPERATOR_TOKEN):
            async with create_channel(address, security=client(token)) as channel:
                await events_pb2_grpc.EventsServiceStub(channel).GetMetrics(metrics_request())
        # Streaming RPCs and reflection run as usual once authenticated.
        async with create_channel(address, security=client(GATEWAY_TOKEN)) as channel:
            request_id = uuid.uuid4().hex
            batch = events_pb2.StreamEventsRequest(sequence=7, impressions=[events_pb2.Impression(
                event_id=f"i-{request_id}", request_id=request_id, surface=events_pb2.SURFACE_SEARCH, product_ids=["p1"],
            )])
            acks = [ack async for ack in events_pb2_grpc.EventsServiceStub(channel).StreamEvents(iter([batch]))]
            assert [(ack.sequence, ack.accepted) for ack in acks] == [(7, 1)]
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            answers = [a async for a in reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))]
            assert "shelfwise.events.v1.EventsService" in {s.name for s in answers[0].list_services_response.service}
        # A service's channel (the gateway's downstream ones) takes its token from the environment.
        with mock.patch.dict(os.environ, {"SHELFWISE_AUTH_TOKEN": GATEWAY_TOKEN}):
            channel = create_channel(address)
        async with channel:
            await events_pb2_grpc.EventsServiceStub(channel).GetMetrics(metrics_request())


async def test_no_token_reaches_a_log_record_or_a_span(postgres_url, tmp_path, span_exporter, caplog):
    wrong = f"wrong-{uuid.uuid4().hex}"
    caplog.set_level(logging.DEBUG)
    span_exporter.clear()
    async with events_server(postgres_url, **token_environ(tmp_path)) as running:
        address = f"127.0.0.1:{running.port}"
        for token in (SHOP_TOKEN, wrong):
            async with create_channel(address, security=client(token)) as channel:
                try:
                    await events_pb2_grpc.EventsServiceStub(channel).GetMetrics(metrics_request())
                except grpc.aio.AioRpcError:
                    pass
    spans = span_exporter.get_finished_spans()
    assert any(span.attributes.get("shelfwise.principal") == "shop" for span in spans), "the server span names the caller"
    recorded = [span.to_json() for span in spans]
    recorded += [record.getMessage() + repr(record.args) + repr(record.__dict__) for record in caplog.records]
    for token in (SHOP_TOKEN, wrong):
        assert not [text for text in recorded if token in text]


async def test_callers_over_their_rate_are_refused_and_counted_and_exempt_services_are_not(postgres_url, tmp_path):
    environ = token_environ(
        tmp_path, SHELFWISE_RATE_LIMIT_RPS="0.01", SHELFWISE_RATE_LIMIT_BURST="2", SHELFWISE_RATE_LIMIT_EXEMPT="gateway"
    )
    async with events_server(postgres_url, **environ) as running:
        address = f"127.0.0.1:{running.port}"
        async with create_channel(address, security=client(RANKING_TOKEN)) as channel:
            stub = events_pb2_grpc.EventsServiceStub(channel)
            await stub.GetMetrics(metrics_request())
            await stub.GetMetrics(metrics_request())
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.GetMetrics(metrics_request())
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "0.01 calls per second per caller, bursts of up to 2" in refused.value.details()
        assert any(p.attributes.get("shelfwise.principal") == "ranking" for p in metric_points("shelfwise.rpc.rate_limited"))
        async with create_channel(address, security=client(GATEWAY_TOKEN)) as channel:
            for _ in range(5):
                await events_pb2_grpc.EventsServiceStub(channel).GetMetrics(metrics_request())


# --- mTLS ------------------------------------------------------------------------------------------


def _certificates(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost and two client certificates: CN `shop`
    without an organisational unit (the caller role) and CN `gateway` with OU `service`, made
    with the openssl command (no Python crypto library in the venv)."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder, timeout=60)

    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
            "-subj", "/CN=shelfwise-test-ca", "-keyout", "ca.key", "-out", "ca.crt")
    client = "basicConstraints=CA:FALSE"
    for name, subject, extension in (
        ("server", "/CN=server", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
        ("shop", "/CN=shop", client),
        ("gateway", "/CN=gateway/OU=service", client),
    ):
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", subject,
                "-keyout", f"{name}.key", "-out", f"{name}.csr")
        (folder / f"{name}.ext").write_text(extension + "\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "1", "-extfile", f"{name}.ext", "-out", f"{name}.crt")
    return {
        name: folder / name
        for name in ("ca.crt", "server.crt", "server.key", "shop.crt", "shop.key", "gateway.crt", "gateway.key")
    }


async def test_mtls_admits_clients_with_a_certificate_of_the_ca_and_names_them(postgres_url, tmp_path, span_exporter):
    files = _certificates(tmp_path)
    environ = {
        "SHELFWISE_AUTH": "mtls",
        "SHELFWISE_TLS_CERT_FILE": str(files["server.crt"]),
        "SHELFWISE_TLS_KEY_FILE": str(files["server.key"]),
        "SHELFWISE_TLS_CA_FILE": str(files["ca.crt"]),
    }
    span_exporter.clear()
    async with events_server(postgres_url, **environ) as running:
        address = f"127.0.0.1:{running.port}"
        def certificate(name: str) -> SecuritySettings:
            return SecuritySettings(
                tls_cert_file=str(files[f"{name}.crt"]), tls_key_file=str(files[f"{name}.key"]),
                tls_ca_file=str(files["ca.crt"]),
            )

        async with create_channel(address, security=certificate("gateway")) as channel:
            await events_pb2_grpc.EventsServiceStub(channel).GetMetrics(metrics_request(), timeout=10)
        # A certificate without an organisational unit is a caller's: the shop's API only.
        async with create_channel(address, security=certificate("shop")) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await events_pb2_grpc.EventsServiceStub(channel).GetMetrics(metrics_request(), timeout=10)
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "needs the service role; 'shop' has the caller role" in denied.value.details()
        # TLS without a client certificate: the handshake fails.
        async with create_channel(address, security=SecuritySettings(tls_ca_file=str(files["ca.crt"]))) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await events_pb2_grpc.EventsServiceStub(channel).GetMetrics(metrics_request(), timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        # Plain text: refused as well.
        async with create_channel(address, security=NO_CREDENTIALS) as channel:
            with pytest.raises(grpc.aio.AioRpcError):
                await events_pb2_grpc.EventsServiceStub(channel).GetMetrics(metrics_request(), timeout=10)
    principals = {span.attributes.get("shelfwise.principal") for span in span_exporter.get_finished_spans()}
    assert {"gateway", "shop"} <= principals


UNDECODABLE = b"\x0a\x05\xff\xfe\xc3\x28\x80"  # field 1, a string of invalid UTF-8


async def test_a_caller_without_a_token_is_refused_before_its_message_is_decoded(postgres_url, tmp_path):
    """The body is not valid protobuf: decoded, it would be INVALID_ARGUMENT, as it is for an
    authenticated caller. Without a token the answer is UNAUTHENTICATED: nothing read it."""
    method = "/shelfwise.events.v1.EventsService/ListUserHistory"
    async with events_server(postgres_url, **token_environ(tmp_path)) as running:
        address = f"127.0.0.1:{running.port}"
        async with create_channel(address, security=NO_CREDENTIALS) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await channel.unary_unary(method)(UNDECODABLE, timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        async with create_channel(address, security=client(GATEWAY_TOKEN)) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as decoded:
                await channel.unary_unary(method)(UNDECODABLE, timeout=10)
            assert decoded.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_shop_token_may_not_read_user_history_or_change_the_catalogue(postgres_url, tmp_path):
    """Authorization by role (services/common/authorization.py): the shop's token is a caller's.
    Retrieval's methods are checked on a real server with the shared interceptors in front of a
    servicer that answers every write with an empty response: the interceptors are under test,
    and what they refuse never reaches it."""
    from shelfwise.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc

    from services.common.server import start_server

    class AnswersWrites(retrieval_pb2_grpc.RetrievalServiceServicer):
        async def UpsertProducts(self, request, context):  # noqa: N802 - the RPC's name
            return retrieval_pb2.UpsertProductsResponse()

        async def DeleteProducts(self, request, context):  # noqa: N802
            return retrieval_pb2.DeleteProductsResponse()

    environ = token_environ(tmp_path)
    async with events_server(postgres_url, **environ) as running:
        async with create_channel(f"127.0.0.1:{running.port}", security=client(SHOP_TOKEN)) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await events_pb2_grpc.EventsServiceStub(channel).ListUserHistory(
                    events_pb2.ListUserHistoryRequest(user_id="someone"), timeout=10
                )
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "ListUserHistory needs the service role; 'shop' has the caller role" in denied.value.details()

    retrieval = await start_server(
        register=lambda server: retrieval_pb2_grpc.add_RetrievalServiceServicer_to_server(
            AnswersWrites(), server
        ),
        service_names=["shelfwise.retrieval.v1.RetrievalService"],
        security=SecuritySettings.from_env(environ),
    )
    try:
        delete = retrieval_pb2.DeleteProductsRequest(product_ids=["p1"])
        for token, expected in (
            (SHOP_TOKEN, grpc.StatusCode.PERMISSION_DENIED),
            (GATEWAY_TOKEN, grpc.StatusCode.PERMISSION_DENIED),  # a service reads the catalogue, never writes it
            (OPERATOR_TOKEN, grpc.StatusCode.OK),
        ):
            async with create_channel(f"127.0.0.1:{retrieval.port}", security=client(token)) as channel:
                stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
                for call in (stub.DeleteProducts(delete, timeout=10), stub.UpsertProducts(retrieval_pb2.UpsertProductsRequest(), timeout=10)):
                    try:
                        await call
                        code, details = grpc.StatusCode.OK, ""
                    except grpc.aio.AioRpcError as error:
                        code, details = error.code(), error.details()
                    assert code == expected, (token[:8], details)
                    if expected == grpc.StatusCode.PERMISSION_DENIED:
                        assert "needs the admin role" in details
    finally:
        await retrieval.stop()


async def test_auth_is_off_by_default_locally(postgres_url):
    async with events_server(postgres_url) as running:
        async with create_channel(f"127.0.0.1:{running.port}", security=NO_CREDENTIALS) as channel:
            await events_pb2_grpc.EventsServiceStub(channel).GetMetrics(metrics_request())


async def test_the_gateway_authenticates_its_own_calls_to_the_other_services(system, postgres_url, tmp_path, database):
    """A gateway and an events service with auth on (the other stages are the session's): the
    shop's Search is served, and its impression reaches events, which refuses calls without a
    valid token, so the gateway's own call carried its token."""
    from shelfwise.gateway.v1 import gateway_pb2, gateway_pb2_grpc

    from services.gateway.config import GatewaySettings
    from services.gateway.server import create_server as create_gateway

    environ = token_environ(tmp_path, SHELFWISE_AUTH_TOKEN=GATEWAY_TOKEN)
    async with events_server(postgres_url, **environ) as events:
        settings_environ = {**system.environ, "SHELFWISE_EVENTS_ADDRESS": f"127.0.0.1:{events.port}"}
        with mock.patch.dict(os.environ, environ):
            gateway = await create_gateway(GatewaySettings.from_env(settings_environ), port=0)
        try:
            address = f"127.0.0.1:{gateway.port}"
            await wait_until_serving(address, timeout=30)
            async with create_channel(address, security=NO_CREDENTIALS) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await gateway_pb2_grpc.GatewayServiceStub(channel).Search(gateway_pb2.SearchRequest(query="tea"))
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            async with create_channel(address, security=client(SHOP_TOKEN)) as channel:
                response = await gateway_pb2_grpc.GatewayServiceStub(channel).Search(
                    gateway_pb2.SearchRequest(query="tea", page_size=3), timeout=30
                )
            assert response.results
            await gateway.app.wait_for_impressions({response.request_id})
            assert await database.fetchval(
                "SELECT count(*) FROM impressions WHERE request_id = $1", response.request_id
            ) == 1
        finally:
            await gateway.stop()
