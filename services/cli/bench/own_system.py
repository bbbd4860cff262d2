"""The system `shelfwise bench search` starts for itself when it is given no gateway address:
embedded PostgreSQL and the five services as processes on free ports in a folder (a temporary
one, or `--data-dir` kept for the next run), holding a synthetic catalogue.

The catalogue is imported through retrieval (embedding every product, timed, resumable: an
import stopped mid-way goes on where it stopped, `synthetic_import.py`) or, with
`--random-vectors`, written straight into PostgreSQL with random vectors (`random_vectors.py`).
A kept folder holding the same catalogue (build.json) is reused: retrieval rebuilds its indexes
from PostgreSQL's cached vectors at start-up. Query understanding starts after the catalogue is
in: it reads the vocabulary once instead of at every refresh while products pour in.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from services.cli.bench.random_vectors import write_random_catalog
from services.cli.bench.synthetic_import import IMPORT_STATE, ImportState, import_synthetic


def breakers_opened(log_path: Path, offset: int = 0) -> int:
    """How many times a circuit breaker opened, counted in a service's log from byte `offset`
    (`services.common.circuit` logs every transition to open once)."""
    if not log_path.is_file():
        return 0
    with log_path.open("rb") as log:
        log.seek(offset)
        return sum(1 for line in log if b"circuit " in line and b" -> open after " in line)


def peak_rss_mib(pids: Iterable[int]) -> dict[int, float]:
    """Peak resident memory (VmHWM) of processes, MiB, from /proc."""
    peaks = {}
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks[pid] = int(line.split()[1]) / 1024
        except OSError:
            pass
    return peaks


@dataclass(frozen=True)
class OwnSystem:
    """The system the bench starts for itself when it is given no gateway address."""

    model_repository: Path
    items: int = 10_000  # synthetic catalogue size
    # Every service runs under cProfile and writes <service>.prof here.
    profile_dir: Path | None = None
    # Keep PostgreSQL here and reuse its catalogue next time (default: a temporary folder).
    data_dir: Path | None = None
    # Products and random vectors written straight into PostgreSQL instead of an import through
    # retrieval (bench/random_vectors.py): a large catalogue in minutes, dense lists random.
    random_vectors: bool = False


async def import_once(folder: Path, retrieval_address: str, items: int, seed: int) -> tuple[float, int]:
    """Imports the synthetic catalogue into the stack in `folder`, continuing an import an
    earlier run left unfinished; returns (seconds over every run, runs) and records them in
    build.json for later runs to reuse."""
    state_path = folder / IMPORT_STATE
    state = ImportState.read(state_path, items, seed)
    if state.imported_through:
        print(f"continuing the import of {items:,} synthetic products stopped at {state.imported_through:,} after "
              f"{state.seconds:.0f}s ({state.runs} earlier run{'s' if state.runs != 1 else ''})",
              file=sys.stderr, flush=True)
    else:
        print(f"importing {items:,} synthetic products", file=sys.stderr, flush=True)
    state.runs += 1
    await import_synthetic(retrieval_address, items, seed, state=state, state_path=state_path)
    (folder / "build.json").write_text(json.dumps({
        "items": items, "seed": seed, "import_s": state.seconds, "import_runs": state.runs,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }))
    state_path.unlink()
    return state.seconds, state.runs


async def start_own_system(folder: Path, own: OwnSystem, seed: int, retrieval_replicas: int, experiments: dict):
    """Starts the system in `folder` with the `experiments` (SHELFWISE_EXPERIMENTS), the
    catalogue in (imported, written, or found from an earlier run); returns (the LocalStack,
    build figures: import and start times). The caller stops the stack."""
    from services.local.stack import LocalStack, StackSettings

    experiments_file = folder / "experiments.json"
    experiments_file.write_text(json.dumps(experiments))
    built_file = folder / "build.json"
    built = json.loads(built_file.read_text()) if built_file.is_file() else None
    vectors = "random" if own.random_vectors else "encoded"
    reuse = (built is not None and built.get("items") == own.items and built.get("seed") == seed
             and built.get("vectors", "encoded") == vectors)
    stack = LocalStack(StackSettings(
        state_dir=folder, model_repository=own.model_repository, profile_dir=own.profile_dir,
        environ={"SHELFWISE_EXPERIMENTS": str(experiments_file)},
    ))
    try:
        first, written = ("events", "retrieval"), False
        if own.random_vectors and not reuse:
            await stack.start(services=("events",), timeout=600)  # PostgreSQL and its tables
            seconds, _ = await write_random_catalog(
                stack.database_url, {**os.environ, **stack.environ}, own.items, seed,
                log=lambda line: print(line, file=sys.stderr, flush=True),
            )
            built = {"items": own.items, "seed": seed, "import_s": seconds, "import_runs": 1, "vectors": vectors}
            built_file.write_text(json.dumps(built))
            first, written = ("retrieval",), True
        started = time.perf_counter()
        await stack.start(services=first, replicas={"retrieval": retrieval_replicas}, timeout=3600)
        retrieval_start = time.perf_counter() - started
        print(f"PostgreSQL, events and retrieval SERVING in {retrieval_start:.1f}s", file=sys.stderr, flush=True)
        if reuse or written:
            import_seconds, import_runs = built["import_s"], built.get("import_runs", 1)
            print(f"the catalogue in {folder} was built in {import_seconds:.0f}s; retrieval built its indexes "
                  f"from PostgreSQL in {retrieval_start:.1f}s", file=sys.stderr, flush=True)
        else:
            import_seconds, import_runs = await import_once(folder, stack.address("retrieval"), own.items, seed)
        started = time.perf_counter()
        await stack.start(services=("query_understanding", "ranking", "gateway"), timeout=3600)
        return stack, {
            "items": own.items, "import_s": import_seconds, "import_runs": import_runs, "reused": reuse,
            "retrieval_start_s": retrieval_start, "rest_start_s": time.perf_counter() - started,
        }
    except BaseException:
        await stack.stop()
        raise
