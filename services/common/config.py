"""Settings read once from the environment into frozen dataclasses.

Every service's `config.py` builds its own settings from these helpers, so variable names and
parsing rules are the same everywhere: `SHELFWISE_<NAME>` for ours, the standard `OTEL_*` names
for telemetry. Bad values fail at start-up with a message naming the variable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from services.common.env import env_bool, env_float, env_int, env_str  # noqa: F401 (every config.py reads them here)

if TYPE_CHECKING:
    from services.common.circuit import CircuitSettings

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# The largest request each service's API needs, as its default limit. A call whose message is
# larger is refused from its frame header, before the body is read: at 4 MiB everywhere, each
# rejected 2 MB message cost the gateway 10-35 MB of memory (issue 27). The gateway's largest
# request is a Track of 500 interactions (a few hundred KB); query understanding's a query of
# 512 characters; ranking, retrieval (catalogue upserts) and events (batches) take bulk.
SERVICE_MAX_MESSAGE_BYTES = {
    "gateway": 1024 * 1024,
    "query_understanding": 64 * 1024,
}

ADMISSION_MODES = ("adaptive", "off")
# The floor of the adaptive concurrency limits. The gateway's is one: it is the edge, where a
# shop's excess traffic must be shed, and on a small machine one or two searches at a time
# are all the downstream services serve at their unloaded latency. The internal services are
# called by the gateway (already limited) and by operators' tools (an import sends two
# batches at once): their floor keeps those from being refused by a limit learned in a quiet
# moment.
SERVICE_MIN_LIMIT = {"gateway": 1}

DEFAULT_PORTS = {
    "gateway": 50051,
    "query_understanding": 50052,
    "retrieval": 50053,
    "ranking": 50054,
    "events": 50055,
}


# Clients are sent GOAWAY after this long and reconnect, re-resolving the service's address:
# how a round-robin client over a headless Service finds replicas added since it connected
# (0 = connections live forever).
DEFAULT_MAX_CONNECTION_AGE_SECONDS = 300.0


@dataclass(frozen=True)
class AdmissionSettings:
    """Admission control of a server (`services.common.admission`): SHELFWISE_ADMISSION
    (adaptive | off), SHELFWISE_ADMISSION_MIN_LIMIT, _MAX_LIMIT and _INITIAL_LIMIT (concurrent
    calls per method: floor, ceiling, start), SHELFWISE_ADMISSION_TOLERANCE (mean latency over the baseline that shrinks the
    limit), SHELFWISE_ADMISSION_WINDOW_CALLS (finished calls averaged per adjustment). Defaults
    chosen with `shelfwise bench search` at 50 and 200 requests/s (services/common/admission.py
    lists the variants tried; figures in services/cli/README.md)."""

    mode: str = "adaptive"
    min_limit: int = 4
    max_limit: int = 256
    tolerance: float = 1.2
    window_samples: int = 10
    window_seconds: float = 1.0
    # Where each method's limit starts (None: at min_limit), within [min_limit, max_limit].
    # A limit that starts at the gateway's floor of one refuses every concurrent call of a
    # fresh process until windows of calls have taught it more (a simulated shop's first
    # burst was mostly refused, CI 2026-12-05); Netflix's concurrency-limits starts at 20.
    initial_limit: int | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, service: str = "") -> "AdmissionSettings":
        mode = env_str("SHELFWISE_ADMISSION", "adaptive", environ)
        if mode not in ADMISSION_MODES:
            raise ValueError(f"SHELFWISE_ADMISSION must be one of {', '.join(ADMISSION_MODES)}, got {mode!r}")
        min_limit = env_int("SHELFWISE_ADMISSION_MIN_LIMIT", SERVICE_MIN_LIMIT.get(service, cls.min_limit), environ,
                            minimum=1)
        max_limit = env_int("SHELFWISE_ADMISSION_MAX_LIMIT", cls.max_limit, environ, minimum=1)
        if max_limit < min_limit:
            raise ValueError(
                f"SHELFWISE_ADMISSION_MAX_LIMIT ({max_limit}) must be at least SHELFWISE_ADMISSION_MIN_LIMIT ({min_limit})"
            )
        return cls(
            mode=mode, min_limit=min_limit, max_limit=max_limit,
            tolerance=env_float("SHELFWISE_ADMISSION_TOLERANCE", cls.tolerance, environ, minimum=1.0),
            window_samples=env_int("SHELFWISE_ADMISSION_WINDOW_CALLS", cls.window_samples, environ, minimum=1),
            initial_limit=min(max_limit, max(min_limit, env_int("SHELFWISE_ADMISSION_INITIAL_LIMIT", 20, environ, minimum=1))),
        )


@dataclass(frozen=True)
class ServerSettings:
    """How a service's gRPC server listens."""

    service: str
    host: str
    port: int
    max_message_bytes: int
    shutdown_grace_seconds: float
    max_connection_age_seconds: float = DEFAULT_MAX_CONNECTION_AGE_SECONDS
    admission: AdmissionSettings = AdmissionSettings()

    @classmethod
    def from_env(cls, service: str, environ: Mapping[str, str] | None = None) -> "ServerSettings":
        prefix = f"SHELFWISE_{service.upper()}"
        return cls(
            service=service,
            host=env_str(f"{prefix}_HOST", env_str("SHELFWISE_HOST", "127.0.0.1", environ), environ),
            port=env_int(f"{prefix}_PORT", DEFAULT_PORTS[service], environ, minimum=0),
            # Per service, else the common setting, else what the service's API needs.
            max_message_bytes=env_int(
                f"{prefix}_MAX_MESSAGE_BYTES",
                env_int(
                    "SHELFWISE_MAX_MESSAGE_BYTES", SERVICE_MAX_MESSAGE_BYTES.get(service, DEFAULT_MAX_MESSAGE_BYTES),
                    environ, minimum=1024,
                ),
                environ,
                minimum=1024,
            ),
            shutdown_grace_seconds=env_float("SHELFWISE_SHUTDOWN_GRACE_SECONDS", 5.0, environ, minimum=0.0),
            max_connection_age_seconds=env_float("SHELFWISE_MAX_CONNECTION_AGE_SECONDS", DEFAULT_MAX_CONNECTION_AGE_SECONDS, environ, minimum=0.0),
            admission=AdmissionSettings.from_env(environ, service),
        )


def read_secret(name: str, environ: Mapping[str, str] | None = None) -> str:
    """A secret from `<name>_FILE` (a mounted Kubernetes Secret; preferred) or from `<name>`.

    Both set is a mistake worth stopping for: which one wins would be a guess.
    """
    environ = os.environ if environ is None else environ
    path = env_str(f"{name}_FILE", "", environ)
    value = env_str(name, "", environ)
    if path and value:
        raise ValueError(f"set {name} or {name}_FILE, not both")
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").strip()
        except OSError as error:
            # The error names the path and the reason, never the content.
            raise ValueError(f"{name}_FILE={path!r} cannot be read: {error.strerror}") from None
    return value


AUTH_MODES = ("off", "token", "mtls")


@dataclass(frozen=True, repr=False)
class SecuritySettings:
    """Who may call a service and how a service identifies itself to the others.

    auth          off (default locally), token (`authorization: Bearer <token>` on every call
                  but health checks) or mtls (a client certificate signed by the CA; the
                  principal is its common name). The Kubernetes overlays turn token on.
    caller_tokens the accepted tokens, lines `principal token role` (SHELFWISE_AUTH_TOKENS_FILE or
                  SHELFWISE_AUTH_TOKENS; in the env, entries may also be separated by commas).
    own_token     the token this process sends on its own calls (SHELFWISE_AUTH_TOKEN[_FILE]);
                  the server accepts it too, as principal `self`, so one token is enough for
                  `shelfwise up`.
    tls_*         PEM files: the server's (and client's) certificate and key, and the CA that
                  signs peers (SHELFWISE_TLS_CERT_FILE, SHELFWISE_TLS_KEY_FILE, SHELFWISE_TLS_CA_FILE).
    rate_limit_*  per caller (principal, or client host when auth is off) token bucket:
                  requests per second (0 = no limit, the default) and burst; exempt principals
                  are never limited (SHELFWISE_RATE_LIMIT_RPS, _BURST, _EXEMPT).
    """

    auth: str = "off"
    caller_tokens: str = ""
    own_token: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_ca_file: str = ""
    rate_limit_rps: float = 0.0
    rate_limit_burst: int = 0
    rate_limit_exempt: tuple[str, ...] = ()

    def __repr__(self) -> str:  # never print the tokens (settings end up in logs and tracebacks)
        return (
            f"SecuritySettings(auth={self.auth!r}, caller_tokens={'<set>' if self.caller_tokens else '<unset>'}, "
            f"own_token={'<set>' if self.own_token else '<unset>'}, tls_cert_file={self.tls_cert_file!r}, "
            f"tls_key_file={self.tls_key_file!r}, tls_ca_file={self.tls_ca_file!r}, "
            f"rate_limit_rps={self.rate_limit_rps}, rate_limit_burst={self.rate_limit_burst}, "
            f"rate_limit_exempt={self.rate_limit_exempt!r})"
        )

    __str__ = __repr__

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert_file and self.tls_key_file)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "SecuritySettings":
        raw_auth = env_str("SHELFWISE_AUTH", "off", environ).lower()
        auth = {"true": "token", "on": "token", "1": "token", "false": "off", "0": "off", "none": "off"}.get(raw_auth, raw_auth)
        if auth not in AUTH_MODES:
            raise ValueError(f"SHELFWISE_AUTH={raw_auth!r} must be one of {', '.join(AUTH_MODES)}")
        rps = env_float("SHELFWISE_RATE_LIMIT_RPS", 0.0, environ, minimum=0.0)
        settings = cls(
            auth=auth,
            caller_tokens=read_secret("SHELFWISE_AUTH_TOKENS", environ),
            own_token=read_secret("SHELFWISE_AUTH_TOKEN", environ),
            tls_cert_file=env_str("SHELFWISE_TLS_CERT_FILE", "", environ),
            tls_key_file=env_str("SHELFWISE_TLS_KEY_FILE", "", environ),
            tls_ca_file=env_str("SHELFWISE_TLS_CA_FILE", "", environ),
            rate_limit_rps=rps,
            # Default burst: one second's worth, at least 1.
            rate_limit_burst=env_int("SHELFWISE_RATE_LIMIT_BURST", max(1, int(rps)), environ, minimum=1),
            rate_limit_exempt=tuple(
                sorted(filter(None, (p.strip() for p in env_str("SHELFWISE_RATE_LIMIT_EXEMPT", "", environ).split(","))))
            ),
        )
        if bool(settings.tls_cert_file) != bool(settings.tls_key_file):
            raise ValueError("SHELFWISE_TLS_CERT_FILE and SHELFWISE_TLS_KEY_FILE go together")
        if auth == "mtls" and not (settings.tls and settings.tls_ca_file):
            raise ValueError(
                "SHELFWISE_AUTH=mtls needs SHELFWISE_TLS_CERT_FILE, SHELFWISE_TLS_KEY_FILE and SHELFWISE_TLS_CA_FILE"
            )
        if auth == "token" and not (settings.caller_tokens or settings.own_token):
            raise ValueError(
                "SHELFWISE_AUTH=token needs the accepted tokens: SHELFWISE_AUTH_TOKENS_FILE (lines `principal token role`), "
                "SHELFWISE_AUTH_TOKENS or at least SHELFWISE_AUTH_TOKEN"
            )
        return settings


def service_address(service: str, environ: Mapping[str, str] | None = None) -> str:
    """Where another service listens: SHELFWISE_<SERVICE>_ADDRESS, else localhost:default port."""
    return env_str(f"SHELFWISE_{service.upper()}_ADDRESS", f"127.0.0.1:{DEFAULT_PORTS[service]}", environ)


def database_url(environ: Mapping[str, str] | None = None) -> str:
    url = env_str("SHELFWISE_DATABASE_URL", "", environ)
    if not url:
        raise ValueError("SHELFWISE_DATABASE_URL is not set (`shelfwise up` sets it for the embedded PostgreSQL)")
    return url


def shared_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where the offline commands (evaluation, training) read the data sets, in place."""
    return Path(env_str("SHELFWISE_DATA_DIR", "../shared/data", environ))


def model_repository(environ: Mapping[str, str] | None = None) -> Path:
    return Path(env_str("SHELFWISE_MODEL_REPOSITORY", "model_repository", environ)).resolve()


# Dense retrieval is routed by language (services/retrieval/retriever.py): an English space
# (MiniLM, `text_encoder`) reads English text and the English rendering of Chinese queries, a
# multilingual space (the Universal Sentence Encoder, `text_encoder_use`) the query as typed.
# Both chosen on the Instacart benchmark's train and dev splits (README "Search relevance").
DEFAULT_TEXT_ENCODER = "text_encoder"
DEFAULT_MULTILINGUAL_ENCODER = "text_encoder_use"
NO_ENCODER = "none"


def _model_name(variable: str, default: str, environ: Mapping[str, str] | None) -> str:
    name = env_str(variable, default, environ)
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"{variable}={name!r} is not a model name (e.g. {default})")
    return name


def text_encoder_model(environ: Mapping[str, str] | None = None) -> str:
    """SHELFWISE_TEXT_ENCODER: the model of the English (primary) space, which embeds every
    product, English search text and the English rendering of other queries; similar items and
    personal recommendations read it too. For a catalogue that is not in English, a
    multilingual model (and SHELFWISE_MULTILINGUAL_ENCODER=none)."""
    return _model_name("SHELFWISE_TEXT_ENCODER", DEFAULT_TEXT_ENCODER, environ)


def multilingual_encoder_model(environ: Mapping[str, str] | None = None) -> str | None:
    """SHELFWISE_MULTILINGUAL_ENCODER: the model of the multilingual space, which embeds every
    product and the query as the shopper typed it; "none" (or the primary's name) for one
    space only."""
    name = _model_name("SHELFWISE_MULTILINGUAL_ENCODER", DEFAULT_MULTILINGUAL_ENCODER, environ)
    return None if name == NO_ENCODER or name == text_encoder_model(environ) else name


def content_encoder_model(environ: Mapping[str, str] | None = None) -> str:
    """The model whose product vectors similar items and personal recommendations read (and a
    sequence model's text side): the multilingual space's, which places products of every
    language, else the primary's."""
    return multilingual_encoder_model(environ) or text_encoder_model(environ)


def parse_versions(raw: str, name: str = "SHELFWISE_MODEL_VERSIONS") -> dict[str, int]:
    """"text_encoder=1,ctr_head=2" → {"text_encoder": 1, "ctr_head": 2}."""
    versions = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        model, _, version = item.partition("=")
        if not model or not version.isdigit() or int(version) < 1:
            raise ValueError(f"{name}: {item!r} is not model=version (e.g. text_encoder=1)")
        versions[model.strip()] = int(version)
    return versions


@dataclass(frozen=True)
class InferenceSettings:
    """Where models run: embedded ONNX Runtime or a Triton server, over one model repository."""

    kind: str
    model_repository: Path
    pinned_versions: Mapping[str, int]
    triton_url: str
    triton_timeout_seconds: float
    triton_retries: int
    triton_startup_seconds: float
    # The per-model circuit breakers of the Triton client.
    circuit: CircuitSettings

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "InferenceSettings":
        from services.common.circuit import CircuitSettings  # it reads its settings with this module's helpers

        kind = env_str("SHELFWISE_INFERENCE", "embedded", environ)
        if kind not in {"embedded", "triton"}:
            raise ValueError(f"SHELFWISE_INFERENCE={kind!r} must be 'embedded' or 'triton'")
        return cls(
            kind=kind,
            model_repository=model_repository(environ),
            pinned_versions=parse_versions(env_str("SHELFWISE_MODEL_VERSIONS", "", environ)),
            triton_url=env_str("SHELFWISE_TRITON_URL", "127.0.0.1:8001", environ),
            triton_timeout_seconds=env_float("SHELFWISE_TRITON_TIMEOUT_SECONDS", 1.0, environ, minimum=0.001),
            triton_retries=env_int("SHELFWISE_TRITON_RETRIES", 2, environ, minimum=0),
            triton_startup_seconds=env_float("SHELFWISE_TRITON_STARTUP_SECONDS", 60.0, environ, minimum=0.0),
            circuit=CircuitSettings.from_env(environ),
        )
