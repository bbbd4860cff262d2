"""`shelfwise`: start the system locally (`up`) and talk to it (`search`, `recommend`, `track`,
`suggest`, `import-catalog`, `rules`), build its models (`export`, `train`), measure it (`eval`, `bench`).

This module is the parser alone: each command group lives in services/cli/commands/."""

from __future__ import annotations

import argparse
import asyncio

from services.cli.commands import bench, client, rules, training, triton, up
from services.local.running import run_until_stopped

COMMAND_GROUPS = (up, client, rules, bench, triton, training)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shelfwise", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Delegated commands (export, train, eval, simulate...) take everything after their name,
    # "--help" included; argparse's REMAINDER alone drops a first argument that starts with "-".
    args, unknown = parser.parse_known_args(argv)
    if hasattr(args, "rest"):
        # Leading options land in `unknown`, REMAINDER takes over from the first other token.
        args.rest = [*unknown, *(args.rest or [])]
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    result = args.run(args)
    return run_until_stopped(result) if asyncio.iscoroutine(result) else result
