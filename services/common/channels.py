"""Client channels to other Shelfwise services, created the same way everywhere."""

from __future__ import annotations

import grpc

from services.common.server import grpc_options
from services.common.tracing import instrument_libraries


def create_channel(address: str, max_message_bytes: int = 4 * 1024 * 1024) -> grpc.aio.Channel:
    """An insecure aio channel with tracing (instrumented before creation) and size limits."""
    instrument_libraries()
    options = grpc_options(max_message_bytes) + [
        # Reconnect quickly after a downstream restart instead of backing off for minutes.
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2000),
    ]
    return grpc.aio.insecure_channel(address, options=options)
