"""`shelfwise`: start the system locally (`up`) and talk to it (`search`, `recommend`, `track`,
`import-catalog`), build its models (`export`, `train`), measure it (`eval`, `bench`).

This module is the parser alone: each command group lives in services/cli/commands/."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading

from services.cli.commands import bench, client, training, triton, up

COMMAND_GROUPS = (up, client, bench, triton, training)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shelfwise", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Commands that hand their options to another module's parser (export, train, triton up,
    # eval query-understanding) take everything after their name, "--help" included; argparse's
    # REMAINDER alone drops a first argument that starts with "-".
    args, unknown = parser.parse_known_args(argv)
    if hasattr(args, "rest"):
        # Leading options land in `unknown`, REMAINDER takes over from the first other token.
        args.rest = [*unknown, *(args.rest or [])]
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    result = args.run(args)
    if asyncio.iscoroutine(result):
        import grpc

        try:
            return asyncio.run(_until_stopped(result))
        except grpc.aio.AioRpcError as error:
            print(f"{error.code().name}: {error.details()}", file=sys.stderr)
            return 1
        except asyncio.CancelledError:
            print("stopped", file=sys.stderr)
            return 130
    return result


async def _until_stopped(command):
    """Runs an async command that Ctrl-C (SIGINT) or `kill` (SIGTERM, what Kubernetes and a
    shutting-down machine send) cancels, so its `finally` blocks stop what it started (services,
    PostgreSQL) instead of leaving them running. Set explicitly: a command started in the
    background by a script inherits SIGINT ignored, and SIGTERM would otherwise end Python at
    once. A command may install its own handlers for these (`up` stops at its end instead).
    Signals reach only the main thread: `main` called from another thread (tests, an embedding
    program) runs the command without handlers."""
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
