"""gRPC server bootstrap shared by every service.

One function builds a grpc.aio server the same way everywhere: tracing instrumented first,
message size limits, the error-mapping interceptor (which also counts and times every RPC),
admission control (an adaptive concurrency limit per method, `services.common.admission`),
caller authentication and per-caller rate limits when configured (`services.common.auth`;
off unless SHELFWISE_AUTH / SHELFWISE_RATE_LIMIT_RPS say otherwise), TLS when a certificate is
configured, standard health service and server reflection (v1 and v1alpha,
`services.common.reflection`). `serve` runs it until SIGTERM/SIGINT and then
shuts down gracefully: health goes NOT_SERVING first (load balancers stop sending), in-flight
calls drain for the grace period, then the service's own resources close.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Iterable

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.common import errors
from services.common.admission import AdmissionInterceptor
from services.common.auth import CallerInterceptor, server_credentials
from services.common.config import DEFAULT_MAX_MESSAGE_BYTES, AdmissionSettings, SecuritySettings, ServerSettings
from services.common.metrics import RpcMetrics
from services.common.reflection import enable_reflection
from services.common.tracing import current_trace_id, instrument_libraries

log = logging.getLogger(__name__)

# Health service name for liveness probes (readiness uses "" and the service names).
LIVENESS_SERVICE = "liveness"

# The one table from domain failures to gRPC status codes.
STATUS_FOR_ERROR: dict[type[errors.ShelfwiseError], grpc.StatusCode] = {
    errors.Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
}

# Downstream statuses a service passes on as they are; anything else from a dependency
# becomes UNAVAILABLE (the dependency failed, not the caller).
PASSED_THROUGH_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def status_for(error: errors.ShelfwiseError) -> grpc.StatusCode:
    for error_type in type(error).__mro__:
        if error_type in STATUS_FOR_ERROR:
            return STATUS_FOR_ERROR[error_type]
    return grpc.StatusCode.INTERNAL


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """Turns every exception escaping a handler into a clear status; never a stack trace.

    Knowing each call's final status, it also records the per-RPC request count and latency
    (`RpcMetrics`) for every unary method except health checks.
    """

    def __init__(self, rpc_metrics: RpcMetrics | None = None) -> None:
        self._metrics = rpc_metrics if rpc_metrics is not None else RpcMetrics()

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        deserialize = handler.request_deserializer
        method = handler_call_details.method
        rpc_metrics = self._metrics if RpcMetrics.measured(method) else None

        async def guarded(raw_request, context: grpc.aio.ServicerContext):
            started = time.perf_counter()
            code = grpc.StatusCode.UNKNOWN
            try:
                # Decoded here, not by grpc before the handler runs: grpc would answer a
                # malformed message (e.g. invalid UTF-8 in a string field) with UNKNOWN.
                try:
                    request = deserialize(raw_request) if deserialize is not None else raw_request
                except DecodeError as error:
                    raise errors.InvalidArgument("request", f"must be a valid protobuf message ({error})") from None
                response = await inner(request, context)
                code = context.code() or grpc.StatusCode.OK
                return response
            except errors.ShelfwiseError as error:
                code = status_for(error)
                await context.abort(code, error.message, trailing_metadata=retry_hint(error))
            except grpc.aio.AioRpcError as error:
                code = error.code() if error.code() in PASSED_THROUGH_CODES else grpc.StatusCode.UNAVAILABLE
                await context.abort(code, error.details() or code.name)
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except asyncio.CancelledError:
                remaining = context.time_remaining()
                expired = remaining is not None and remaining <= 0
                code = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
                raise
            except Exception:
                code = grpc.StatusCode.INTERNAL
                trace_id = current_trace_id()
                log.exception("unhandled error in %s (trace id %s)", method, trace_id)
                await context.abort(grpc.StatusCode.INTERNAL, f"internal error (trace id {trace_id or 'none'})")
            finally:
                if rpc_metrics is not None:
                    rpc_metrics.record(method, code.value[0], (time.perf_counter() - started) * 1000.0)

        return grpc.unary_unary_rpc_method_handler(
            guarded,
            request_deserializer=None,
            response_serializer=handler.response_serializer,
        )


# gRPC's retry-policy hint: how long a client should wait before it tries again.
RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"


def retry_hint(error: errors.ShelfwiseError) -> tuple[tuple[str, str], ...]:
    if isinstance(error, errors.Overloaded):
        return ((RETRY_PUSHBACK_KEY, str(error.retry_after_ms)),)
    return ()


def grpc_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """Message limits, and HTTP/2 flow-control windows left at their 64 KiB default. With
    bandwidth-delay probing on (gRPC's default) the windows grow to megabytes, and a peer may
    send that much of a message before the receiver can refuse it for its size: 64 concurrent
    3 MB calls, all refused, took the gateway from 68 to 158 MiB and left it at 83-119 MiB a
    minute later; with probing off, it stayed at its idle size
    (tests/integration/test_oversized_calls.py, issue 27). The services talk within a cluster,
    where a round trip is short and 64 KiB windows keep even a bulk upsert moving."""
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.http2.bdp_probe", 0),
    ]


# How long calls in flight on a connection the server ages out may still take. New calls go
# to the new connection at once, so this only bounds the calls already running: it must exceed
# the longest legitimate call, a catalogue upsert that encodes 500 products on a CPU (up to
# retrieval's 120 s encoding timeout plus the write). At 5 s, imports of large catalogues
# failed with UNAVAILABLE "max connection age" every `max_connection_age_seconds`.
CONNECTION_AGE_GRACE_SECONDS = 300.0


def connection_age_options(max_connection_age_seconds: float,
                           grace_seconds: float = CONNECTION_AGE_GRACE_SECONDS) -> list[tuple[str, int]]:
    """Server options that close each connection after `max_connection_age_seconds` (none for
    0); calls in flight on it get `grace_seconds` more to finish."""
    if max_connection_age_seconds <= 0:
        return []
    return [
        ("grpc.max_connection_age_ms", int(max_connection_age_seconds * 1000)),
        ("grpc.max_connection_age_grace_ms", int(grace_seconds * 1000)),
    ]


# How long one clean-up step of a stopping server may take (its own waits are shorter: the
# gateway's impression flush waits at most its events deadline, twice).
CLEANUP_STEP_SECONDS = 5.0


@dataclass
class RunningServer:
    """A started server with its bound port, health state and clean-up callbacks."""

    server: grpc.aio.Server
    port: int
    service_names: tuple[str, ...]
    health: health.aio.HealthServicer
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # The service's domain object (e.g. the gateway's composer), for tests and tools.
    app: object | None = None
    _stopped: bool = False

    async def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *self.service_names):
            await self.health.set(name, status)

    async def stop(self, grace: float = 0.0) -> None:
        """NOT_SERVING, drain in-flight calls for `grace` seconds, then release resources."""
        if self._stopped:
            return
        self._stopped = True
        await self.set_serving(False)
        await self.server.stop(grace)
        for callback in reversed(self.on_stop):
            # Each step bounded: one that hangs (a channel that does not close) must not keep
            # the process from exiting until its supervisor kills it, and the log says which.
            step = asyncio.ensure_future(callback())
            done, _ = await asyncio.wait({step}, timeout=CLEANUP_STEP_SECONDS)
            if not done:
                step.cancel()
                log.warning("stopping: %s did not finish within %.0fs; going on without it",
                            getattr(callback, "__qualname__", callback), CLEANUP_STEP_SECONDS)
            elif step.exception() is not None:  # clean-up must go on for the other resources
                log.error("error while stopping", exc_info=step.exception())


@dataclass(frozen=True)
class Listening:
    """Where and how a server listens. `max_connection_age_seconds` > 0: each client connection
    is closed (GOAWAY, in-flight calls get `connection_age_grace_seconds` to finish) after about
    that long, so clients reconnect and spread over the current replicas. `admission`: how
    many calls each method runs at once (`services.common.admission`)."""

    host: str = "127.0.0.1"
    port: int = 0
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_connection_age_seconds: float = 0.0
    connection_age_grace_seconds: float = CONNECTION_AGE_GRACE_SECONDS
    admission: AdmissionSettings = AdmissionSettings()

    @classmethod
    def of(cls, settings: ServerSettings, port: int | None = None) -> "Listening":
        """A service's listening settings; `port` (e.g. 0 in tests) replaces the configured one."""
        return cls(
            host=settings.host,
            port=settings.port if port is None else port,
            max_message_bytes=settings.max_message_bytes,
            max_connection_age_seconds=settings.max_connection_age_seconds,
            admission=settings.admission,
        )


async def start_server(
    *,
    register: Callable[[grpc.aio.Server], None],
    service_names: Iterable[str],
    listening: Listening = Listening(),
    security: SecuritySettings | None = None,
) -> RunningServer:
    """Builds, binds and starts a server; health starts NOT_SERVING until the caller is ready.

    `security` defaults to SecuritySettings.from_env() (authentication, rate limits, TLS)."""
    host, port = listening.host, listening.port
    instrument_libraries()
    security = SecuritySettings.from_env() if security is None else security
    # Error mapping outermost, so refused calls are counted in the RPC metrics with their status;
    # admission next, so a call that will be shed costs no authentication work.
    interceptors: list[grpc.aio.ServerInterceptor] = [ErrorMappingInterceptor()]
    admission_interceptor = AdmissionInterceptor.from_settings(listening.admission)
    if admission_interceptor is not None:
        interceptors.append(admission_interceptor)
    caller_interceptor = CallerInterceptor.from_settings(security)
    if caller_interceptor is not None:
        interceptors.append(caller_interceptor)
    options = grpc_options(listening.max_message_bytes) + connection_age_options(
        listening.max_connection_age_seconds, listening.connection_age_grace_seconds
    )
    server = grpc.aio.server(interceptors=interceptors, options=options)
    register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = tuple(service_names)
    enable_reflection((*names, health.SERVICE_NAME), server)
    credentials = server_credentials(security)
    if credentials is None:
        bound = server.add_insecure_port(f"{host}:{port}")
    else:
        bound = server.add_secure_port(f"{host}:{port}", credentials)
    if bound == 0:
        raise OSError(f"could not bind {host}:{port}")
    await server.start()
    running = RunningServer(server=server, port=bound, service_names=names, health=health_servicer)
    await running.set_serving(False)
    log.info(
        "listening on %s:%d (auth %s%s, TLS %s)", host, bound, security.auth,
        f", rate limit {security.rate_limit_rps:g}/s burst {security.rate_limit_burst}" if security.rate_limit_rps else "",
        "on" if credentials is not None else "off",
    )
    # Liveness is about the process, not its dependencies: SERVING until the server stops.
    await health_servicer.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    return running


async def serve(running: RunningServer, grace_seconds: float) -> None:
    """Serves until SIGTERM or SIGINT, then shuts down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server_done = asyncio.ensure_future(running.server.wait_for_termination())
    stop_requested = asyncio.ensure_future(stop.wait())
    await asyncio.wait({server_done, stop_requested}, return_when=asyncio.FIRST_COMPLETED)
    log.info("shutting down: NOT_SERVING, draining for up to %.1fs", grace_seconds)
    await running.stop(grace_seconds)
    stop_requested.cancel()
    server_done.cancel()
