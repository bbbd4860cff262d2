"""The command groups of `shelfwise`, one module each: `up`, the client calls (`search`,
`recommend`, `track`, `suggest`, `import-catalog`), `bench`, `triton` and the model and data work that
training/ does (`export`, `quantize`, `train`, `eval`, `report`, `simulate`).

Each module has `register(commands)`, which adds its subcommands to the top-level parser. A
subcommand either runs a function of the CLI (`set_defaults(run=...)`), or hands everything
after its name to another module's `main(argv)` through `delegate`, which imports that module
only when the command runs: training/ is reached this way alone, so starting the CLI imports
neither training/ nor torch."""

from __future__ import annotations

import argparse
import importlib

from services.cli.library_noise import quiet_library_noise


def delegate(commands, name: str, help_text: str, target: str, quiet_libraries: bool = False) -> None:
    """Adds subcommand `name`, which calls `target` ("package.module:function") with the
    arguments after the name (its own parser then reads them, --help included). With
    `quiet_libraries`, the libraries' noise is filtered first (services/cli/library_noise.py)."""
    module_name, _, function_name = target.partition(":")

    def run(args) -> int:
        if quiet_libraries:
            quiet_library_noise()
        return getattr(importlib.import_module(module_name), function_name)(args.rest)

    sub = commands.add_parser(name, help=help_text, add_help=False)
    sub.add_argument("rest", nargs=argparse.REMAINDER)
    sub.set_defaults(run=run)
