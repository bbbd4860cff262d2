"""Who is calling: caller authentication and per-caller rate limits for every server, and the
credentials a service presents on its own calls.

Server side (`CallerInterceptor`, installed by `services.common.server.start_server`):

- SHELFWISE_AUTH=token: every call carries `authorization: Bearer <token>`, and the token is one
  of the configured callers' (lines `principal token role`, e.g. from a mounted Kubernetes
  Secret; the roles are in services/common/authorization.py).
  A missing or unknown token gets UNAUTHENTICATED with a message saying what to send; the
  token itself is never echoed, logged or put on a span. Only SHA-256 digests of the accepted
  tokens are kept in memory, compared in constant time (hmac.compare_digest).
- SHELFWISE_AUTH=mtls: the TLS handshake already refused clients without a certificate signed
  by the CA; the principal is the certificate's common name, its role the organisational unit
  (`OU=service`; `caller` without one).
- Authenticated callers are then authorised: a method their role does not cover gets
  PERMISSION_DENIED naming the role it needs (services/common/authorization.py). The check
  reads only metadata, like authentication, so a refused call's message is never decoded.
- grpc.health.v1 stays open: kubelet's native gRPC probes cannot send a token, and health
  reveals nothing but SERVING/NOT_SERVING. Server reflection is NOT open: it describes every
  method and message of the API, which is for operators (grpcurl sends the token with
  `-H 'authorization: Bearer ...'`), not for anyone who can reach the port.
- With a rate limit configured (`services.common.rate_limit`), each caller's calls go through
  its token bucket after authentication; refused calls get RESOURCE_EXHAUSTED.

Client side (`token_interceptors`, installed by `services.common.channels.create_channel`): the
process's own token (SHELFWISE_AUTH_TOKEN or _FILE) goes on every call it makes, so the
gateway's calls to the other services authenticate as the gateway.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
from typing import Awaitable, Callable, Iterable, Sequence

import grpc
from opentelemetry import trace

from services.common.authorization import ADMIN, CALLER, allowed, check_role, required_role
from services.common.config import SecuritySettings
from services.common.rate_limit import RateLimiter

# Methods any caller may use without credentials (see the module docstring for why).
OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/",)
# The principal of the process's own token when the server also accepts it (`shelfwise up`
# with one token for everything).
SELF_PRINCIPAL = "self"
# Shorter tokens are guessable; `openssl rand -hex 32` gives 64 characters.
MIN_TOKEN_CHARS = 16
AUTHORIZATION = "authorization"
WHAT_TO_SEND = "send the metadata `authorization: Bearer <token>` with a token configured for your caller"


class Refused(Exception):
    """A call that may not proceed: the status and a message for the caller."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_tokens(text: str, source: str = "SHELFWISE_AUTH_TOKENS") -> list[tuple[str, str, str]]:
    """`principal token role` entries, one per line (or separated by commas); `#` starts a
    comment. The role is required: a tokens file written before roles existed fails here, at
    start-up, rather than each call later.

    Errors name the line and the principal, never the token."""
    entries = []
    for number, line in enumerate(text.replace(",", "\n").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 3:
            raise ValueError(
                f"{source}: entry {number} is not `principal token role` (three fields separated by spaces; "
                "role caller, service or admin)"
            )
        principal, token, role = fields
        if len(token) < MIN_TOKEN_CHARS:
            raise ValueError(f"{source}: the token of {principal!r} is shorter than {MIN_TOKEN_CHARS} characters")
        entries.append((principal, token, check_role(role, f"{source}: entry {number} ({principal!r})")))
    return entries


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class Authenticator:
    """Maps a bearer token to the caller's principal and role; keeps only digests of the tokens."""

    def __init__(self, entries: Iterable[tuple[str, str, str]]) -> None:
        self._digests: list[tuple[bytes, str, str]] = []
        seen: dict[bytes, str] = {}
        for principal, token, role in entries:
            digest = _digest(token)
            if digest in seen and seen[digest] != principal:
                raise ValueError(f"the same token is configured for {seen[digest]!r} and {principal!r}")
            seen[digest] = principal
            self._digests.append((digest, principal, role))
        if not self._digests:
            raise ValueError("token authentication is on but no caller token is configured")

    @classmethod
    def from_settings(cls, settings: SecuritySettings) -> "Authenticator":
        entries = parse_tokens(settings.caller_tokens)
        # The own token is usually listed already under the service's principal (the gateway's
        # token in the deployed tokens file): `self` only when it is not, the setup with one
        # token for everything (the operator's own processes), so it gets every role.
        if settings.own_token and settings.own_token not in {token for _, token, _ in entries}:
            entries += parse_tokens(f"{SELF_PRINCIPAL} {settings.own_token} {ADMIN}", "SHELFWISE_AUTH_TOKEN")
        return cls(entries)

    @property
    def principals(self) -> list[str]:
        return sorted({principal for _, principal, _ in self._digests})

    def principal(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> tuple[str, str]:
        """The caller's (principal, role), or Refused(UNAUTHENTICATED) saying what to send."""
        values = [value for key, value in (metadata or ()) if key == AUTHORIZATION]
        if not values:
            raise Refused(grpc.StatusCode.UNAUTHENTICATED, f"no credentials: {WHAT_TO_SEND}")
        if len(values) > 1:
            raise Refused(grpc.StatusCode.UNAUTHENTICATED, f"more than one authorization header: {WHAT_TO_SEND}")
        value = values[0]
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Refused(grpc.StatusCode.UNAUTHENTICATED, f"the authorization header is not a bearer token: {WHAT_TO_SEND}")
        presented = _digest(token.strip())
        found = None
        for digest, principal, role in self._digests:  # every entry, so the time does not tell which matched
            if hmac.compare_digest(digest, presented):
                found = (principal, role)
        if found is None:
            raise Refused(grpc.StatusCode.UNAUTHENTICATED, f"the token is not valid for this service: {WHAT_TO_SEND}")
        return found


def certificate_principal(context: grpc.aio.ServicerContext) -> tuple[str, str]:
    """The (common name, role) of the client certificate the TLS handshake verified: the role
    is its organisational unit (OU), `caller` when it has none."""
    auth = context.auth_context()
    names = auth.get("x509_common_name") or []
    if not names:
        raise Refused(grpc.StatusCode.UNAUTHENTICATED, "a client certificate signed by the service CA is required")
    name = names[0].decode("utf-8", "replace")
    subjects = auth.get("x509_subject") or []
    unit = subject_unit(subjects[0].decode("utf-8", "replace")) if subjects else ""
    try:
        return name, check_role(unit or CALLER, "client certificate OU")
    except ValueError as error:
        raise Refused(grpc.StatusCode.PERMISSION_DENIED, str(error)) from None


def subject_unit(subject: str) -> str:
    """The OU of an RFC 2253 subject such as `CN=gateway,OU=service,O=Shop` ("" if none)."""
    for part in subject.replace("\\,", "\0").split(","):
        key, _, value = part.strip().partition("=")
        if key.upper() == "OU":
            return value.replace("\0", ",").strip()
    return ""


def _host(peer: str) -> str:
    """'ipv4:10.0.0.7:51234' -> 'ipv4:10.0.0.7' (a new connection gets a new port)."""
    return peer.rpartition(":")[0] if peer.count(":") >= 2 else peer


class CallerInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates every call but health checks, then applies the caller's rate limit."""

    def __init__(self, mode: str, authenticator: Authenticator | None = None, limiter: RateLimiter | None = None):
        if mode == "token" and authenticator is None:
            raise ValueError("token authentication needs an Authenticator")
        self._mode = mode
        self._authenticator = authenticator
        self._limiter = limiter

    @classmethod
    def from_settings(cls, settings: SecuritySettings) -> "CallerInterceptor | None":
        """None when there is nothing to check (auth off and no rate limit): no overhead at all."""
        limiter = None
        if settings.rate_limit_rps > 0:
            limiter = RateLimiter(settings.rate_limit_rps, settings.rate_limit_burst, settings.rate_limit_exempt)
        if settings.auth == "off" and limiter is None:
            return None
        authenticator = Authenticator.from_settings(settings) if settings.auth == "token" else None
        return cls(settings.auth, authenticator, limiter)

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(OPEN_METHOD_PREFIXES):
            return handler
        refusal: Refused | None = None
        principal: str | None = None
        role: str | None = None
        if self._mode == "token":
            try:
                principal, role = self._authenticator.principal(handler_call_details.invocation_metadata)
                authorize(principal, role, method)
            except Refused as refused:
                if handler.unary_unary is not None:
                    # Known from the metadata alone: the message is never decoded.
                    return refusing_handler(refused, handler, principal)
                refusal = refused

        async def check(context: grpc.aio.ServicerContext) -> None:
            nonlocal principal, role
            try:
                if refusal is not None:
                    raise refusal
                if self._mode == "mtls":
                    principal, role = certificate_principal(context)
                if principal is not None:
                    trace.get_current_span().set_attribute("shelfwise.principal", principal)
                if role is not None:
                    authorize(principal, role, method)
                if self._limiter is not None:
                    caller = f"principal:{principal}" if principal is not None else _host(context.peer() or "")
                    if not self._limiter.allow(caller, principal, method):
                        raise Refused(
                            grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"rate limit exceeded: {self._limiter.describe()}; retry with backoff",
                        )
            except Refused as refused:
                await context.abort(refused.code, refused.message)

        return guard(handler, check)


def authorize(principal: str, role: str, method: str) -> None:
    """Refused(PERMISSION_DENIED) naming the role `method` needs, unless `role` covers it."""
    if not allowed(role, method):
        raise Refused(
            grpc.StatusCode.PERMISSION_DENIED,
            f"{method} needs the {required_role(method)} role; {principal!r} has the {role} role "
            "(roles: services/common/authorization.py)",
        )


def refusing_handler(
    refused: Refused, handler: grpc.RpcMethodHandler, principal: str | None = None
) -> grpc.RpcMethodHandler:
    """A unary handler that answers `refused` without decoding the request: no deserializer,
    so the error-mapping interceptor outside passes the raw bytes, which nothing reads. The
    server span names the `principal` when one authenticated."""

    async def refuse(raw_request, context: grpc.aio.ServicerContext):
        if principal is not None:
            trace.get_current_span().set_attribute("shelfwise.principal", principal)
        await context.abort(refused.code, refused.message)

    return grpc.unary_unary_rpc_method_handler(
        refuse, request_deserializer=None, response_serializer=handler.response_serializer
    )


def guard(handler: grpc.RpcMethodHandler, check: Callable[[grpc.aio.ServicerContext], Awaitable[None]]):
    """The same handler with `check(context)` awaited before the method runs (any of the four
    kinds of RPC; a streaming method's first message is not read before the check)."""
    kwargs = dict(request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)

    if handler.unary_unary is not None:
        inner_uu = handler.unary_unary

        async def unary_unary(request, context):
            await check(context)
            return await inner_uu(request, context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, **kwargs)
    if handler.stream_unary is not None:
        inner_su = handler.stream_unary

        async def stream_unary(request_iterator, context):
            await check(context)
            return await inner_su(request_iterator, context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, **kwargs)

    async def _stream(inner, request, context):
        await check(context)
        result = inner(request, context)
        if inspect.isasyncgen(result):
            async for response in result:
                yield response
        elif inspect.isawaitable(result):  # a handler that writes with context.write()
            await result

    if handler.unary_stream is not None:
        inner_us = handler.unary_stream

        async def unary_stream(request, context):
            async for response in _stream(inner_us, request, context):
                yield response

        return grpc.unary_stream_rpc_method_handler(unary_stream, **kwargs)
    inner_ss = handler.stream_stream

    async def stream_stream(request_iterator, context):
        async for response in _stream(inner_ss, request_iterator, context):
            yield response

    return grpc.stream_stream_rpc_method_handler(stream_stream, **kwargs)


class _TokenInterceptor:
    """Adds `authorization: Bearer <token>` to the calls of a channel."""

    def __init__(self, token: str) -> None:
        self._header = (AUTHORIZATION, f"Bearer {token}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<token>)"

    def _with_token(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(item for item in (details.metadata or ()) if item[0] != AUTHORIZATION))
        metadata.add(*self._header)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


class _UnaryUnaryToken(_TokenInterceptor, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await continuation(self._with_token(client_call_details), request)


class _UnaryStreamToken(_TokenInterceptor, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await continuation(self._with_token(client_call_details), request)


class _StreamUnaryToken(_TokenInterceptor, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return await continuation(self._with_token(client_call_details), request_iterator)


class _StreamStreamToken(_TokenInterceptor, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return await continuation(self._with_token(client_call_details), request_iterator)


def token_interceptors(token: str) -> list:
    """One interceptor per kind of RPC: a grpc.aio channel files each interceptor under the
    first of the four kinds it implements, so one object for all four would leave streaming
    calls without the token."""
    return [kind(token) for kind in (_UnaryUnaryToken, _UnaryStreamToken, _StreamUnaryToken, _StreamStreamToken)]


def _read(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def server_credentials(settings: SecuritySettings) -> grpc.ServerCredentials | None:
    """TLS for the server when a certificate is configured; client certificates required when
    a CA is configured too (mTLS)."""
    if not settings.tls:
        return None
    root = _read(settings.tls_ca_file) if settings.tls_ca_file else None
    return grpc.ssl_server_credentials(
        [(_read(settings.tls_key_file), _read(settings.tls_cert_file))],
        root_certificates=root,
        require_client_auth=root is not None,
    )


def channel_credentials(settings: SecuritySettings) -> grpc.ChannelCredentials | None:
    """TLS for outgoing calls when a CA is configured, presenting this service's certificate."""
    if not settings.tls_ca_file:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=_read(settings.tls_ca_file),
        private_key=_read(settings.tls_key_file) if settings.tls else None,
        certificate_chain=_read(settings.tls_cert_file) if settings.tls else None,
    )
