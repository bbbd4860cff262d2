"""The README's shell examples, run: every `shelfwise` client command of its ```sh blocks
(search, recommend, track, suggest, import-catalog) as a subprocess against the started system, in order
and with the shell lines between them (the one that writes products.jsonl), each of which must
exit 0 and print something. A README example that stops working fails this test.

Not run, by subcommand (each is named in EXCLUDED with why; a `shelfwise` command that is in
neither list fails the test, so a new README example is never skipped unnoticed): `make up` /
`make test` and `shelfwise up` / `triton` start a whole system of their own (test_cli.py runs
`up`); `export`, `quantize` and `train` write into model_repository/, which tests only read;
`eval`, `bench` and `simulate` take minutes to hours, or need placeholders filled in.

The README's ```python blocks run too, as scripts, with the gateway's address put in for the
default one. A grpcurl example is shown as text: grpcurl is not installable here (the reflection
it relies on is tested in test_platform.py).

The one liberty taken: a request_id is new on every search and the order of results moves with
the clicks other tests log, so a `track` line gets the request id, product id and position of
the track line the search before it printed (what a reader copies) instead of the README's."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import subprocess
import sys

from tests.support.paths import ROOT

README = ROOT / "README.md"

# Client subcommands: run against the gateway, or retrieval for the catalogue import and rules.
CLIENT_COMMANDS = {"search", "recommend", "track", "suggest", "import-catalog", "rules"}
EXCLUDED = {
    "up": "starts its own PostgreSQL and services (tests/integration/test_cli.py runs it)",
    "triton": "starts a Triton server",
    "export": "writes into model_repository/, which the tests only read",
    "quantize": "writes a model version into model_repository/",
    "train": "trains for minutes and exports into model_repository/",
    "eval": "evaluations on the benchmark data sets take minutes; offpolicy needs times filled in",
    "bench": "load and latency benchmarks run for minutes on their own system",
    "simulate": "a simulated A/B test through its own system, minutes",
}


def shell_examples(text: str) -> list[str]:
    """The command lines of every ```sh block, in order."""
    blocks = re.findall(r"^```sh\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_the_readme_shows_the_client_commands():
    commands = [shlex.split(line, comments=True) for line in shell_examples(README.read_text(encoding="utf-8"))]
    shown = {args[1] for args in commands if args[:1] == ["shelfwise"]}
    assert CLIENT_COMMANDS <= shown, f"README.md shows no example of {sorted(CLIENT_COMMANDS - shown)}"
    assert len(README.read_bytes()) < 12 * 1024, "README.md is meant to stay under 12 KB"


async def test_every_client_example_of_the_readme_runs(system, tmp_path):
    # The servers run on this test's event loop: the commands run in a thread so as not to block it.
    def run(command, **kwargs):
        return asyncio.to_thread(subprocess.run, command, cwd=tmp_path, capture_output=True, text=True,
                                 timeout=120, **kwargs)

    cli = [sys.executable, "-m", "services.cli"]
    # The commands run in a scratch folder (the README writes products.jsonl): the code is found by path.
    environ = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'protos'}"}
    last_search = ""
    ran = []
    for line in shell_examples(README.read_text(encoding="utf-8")):
        args = shlex.split(line, comments=True)
        if args[0] == "make":
            continue  # `make up` / `make test`: the set-up itself
        if args[0] != "shelfwise":
            completed = await run(line, shell=True, executable="/bin/bash")
            assert completed.returncode == 0, f"{line}\n{completed.stderr}"
            continue
        subcommand = args[1]
        if subcommand in EXCLUDED:
            continue
        assert subcommand in CLIENT_COMMANDS, f"README runs `shelfwise {subcommand}`: run it here or exclude it"
        if subcommand == "track":
            # What a reader copies: the track line the search before it printed for its first result.
            hint = re.search(r"shelfwise track --request-id (\w+) --product-id (\S+) --position (\d+)", last_search)
            assert hint, f"README's `{line}` follows no search that printed a track line:\n{last_search}"
            for flag, value in zip(("--request-id", "--product-id", "--position"), hint.groups()):
                args[args.index(flag) + 1] = value
        target = (["--retrieval-address", system.address("retrieval")] if subcommand == "import-catalog"
                  else ["--address", system.address("retrieval" if subcommand == "rules" else "gateway")])
        completed = await run([*cli, *args[1:], *target], env=environ)
        assert completed.returncode == 0, f"{line}\n{completed.stdout}\n{completed.stderr}"
        assert completed.stdout.strip(), f"{line} printed nothing"
        if subcommand == "search" and "--json" not in args:
            last_search = completed.stdout
        ran.append(subcommand)
    assert set(ran) == CLIENT_COMMANDS, ran


def python_examples(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


async def test_every_python_example_of_the_readme_runs(system, tmp_path):
    examples = python_examples(README.read_text(encoding="utf-8"))
    assert examples, "README.md shows no Python client example"
    environ = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'protos'}"}
    for example in examples:
        assert "127.0.0.1:50051" in example, "the example should call the gateway's default address"
        script = tmp_path / "example.py"
        script.write_text(example.replace("127.0.0.1:50051", system.address("gateway")), encoding="utf-8")
        completed = await asyncio.to_thread(subprocess.run, [sys.executable, str(script)], cwd=tmp_path,
                                            capture_output=True, text=True, timeout=120, env=environ)
        assert completed.returncode == 0, f"{example}\n{completed.stderr}"
        assert completed.stdout.strip(), f"{example} printed nothing"
