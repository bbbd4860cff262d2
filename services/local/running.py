"""Running a command that starts local processes (services, PostgreSQL, Triton) so that Ctrl-C
(SIGINT) or `kill` (SIGTERM, what Kubernetes and a shutting-down machine send) cancels it: its
`finally` blocks then stop what it started instead of leaving it running. Used by the CLI and by
the training commands it hands over to (evaluations, the simulator)."""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from typing import Any, Coroutine

STOPPED_EXIT_CODE = 130  # the shell's code for a command ended by Ctrl-C


def run_until_stopped(command: Coroutine[Any, Any, int]) -> int:
    """Runs `command` to its end and returns its exit code; 130 when a signal stopped it, 1 when
    a gRPC call failed (its status and message are printed, not a traceback)."""
    import grpc

    try:
        return asyncio.run(_cancelled_by_signals(command))
    except grpc.aio.AioRpcError as error:
        print(f"{error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    except asyncio.CancelledError:
        print("stopped", file=sys.stderr)
        return STOPPED_EXIT_CODE


async def _cancelled_by_signals(command):
    """Set explicitly: a command started in the background by a script inherits SIGINT ignored,
    and SIGTERM would otherwise end Python at once. A command may install its own handlers for
    these (`up` stops at its end instead). Signals reach only the main thread: a command run
    from another thread (tests, an embedding program) runs without handlers."""
    if threading.current_thread() is not threading.main_thread():
        return await command
    task = asyncio.ensure_future(command)
    loop = asyncio.get_running_loop()
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(stop_signal, task.cancel)
    try:
        return await task
    finally:
        for stop_signal in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(stop_signal)
