"""The event loop every service runs on: uvloop (libuv's loop) unless
SHELFWISE_EVENT_LOOP=asyncio.

Each search crosses five Python processes and four gRPC hops; the event loop's own work per
call is a visible share of their CPU, and libuv's loop does that work with less of it (part of
the before/after runs in services/cli/README.md, "Load, measured"). grpc.aio runs on any
asyncio loop; `asyncio` is the fallback should a platform lack uvloop or a problem be traced to
it.
"""

from __future__ import annotations

import asyncio
import os
from typing import Awaitable, Callable, Mapping

LOOPS = ("uvloop", "asyncio")


def event_loop_name(environ: Mapping[str, str] | None = None) -> str:
    name = (environ if environ is not None else os.environ).get("SHELFWISE_EVENT_LOOP", "uvloop").strip().lower() or "uvloop"
    if name not in LOOPS:
        raise ValueError(f"SHELFWISE_EVENT_LOOP must be one of {', '.join(LOOPS)}, got {name!r}")
    return name


def run(main: Callable[[], Awaitable[None]], environ: Mapping[str, str] | None = None) -> None:
    """Runs a service's main coroutine to completion on the configured loop."""
    if event_loop_name(environ) == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    else:
        asyncio.run(main())
