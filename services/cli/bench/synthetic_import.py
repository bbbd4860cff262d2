"""Importing `shelfwise bench search`'s synthetic catalogue through retrieval: a few batches in
flight, products generated as they are sent, and the progress kept in the data folder so that
an import stopped mid-way (a 1M-item catalogue takes hours to embed on a CPU) goes on where it
stopped."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

IMPORT_BATCH = 500
IMPORT_CONCURRENCY = 2  # one batch encodes while the previous one is written
IMPORT_STATE = "import.json"  # in a kept data folder while an import is unfinished (ImportState)


@dataclass
class ImportState:
    """How far an import into a kept data folder got (`IMPORT_STATE` there), so that a run
    killed mid-import (a reboot, Ctrl-C: a 1M-item catalogue takes hours to embed on a CPU)
    goes on where it stopped. `imported_through`: every product up to this number is in
    PostgreSQL (batches finish out of order by at most IMPORT_CONCURRENCY; later ones that had
    finished are sent again, and retrieval keeps their vectors instead of encoding them again).
    `seconds`: import time of all runs so far."""

    items: int
    seed: int
    imported_through: int = 0
    seconds: float = 0.0
    runs: int = 0

    @classmethod
    def read(cls, path: Path, items: int, seed: int) -> "ImportState":
        """The state of this catalogue's import in `path`, or a fresh one (none there, another
        catalogue's, or unreadable)."""
        try:
            state = cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return cls(items, seed)
        return state if (state.items, state.seed) == (items, seed) else cls(items, seed)

    def write(self, path: Path) -> None:
        staging = path.with_suffix(".tmp")
        staging.write_text(json.dumps(asdict(self)))
        os.replace(staging, path)


async def import_synthetic(retrieval_address: str, items: int, seed: int, progress: bool = True,
                           state: ImportState | None = None, state_path: Path | None = None) -> float:
    """Upserts the synthetic catalogue through retrieval, IMPORT_CONCURRENCY batches in flight
    (products are generated as they are sent, never all held); returns the seconds it took.
    With `state`, starts after its `imported_through` and keeps it (and the seconds) up to
    date in `state_path` as batches finish."""
    from shelfwise.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc

    from services.local.synthetic_catalog import generate_products
    from services.common.channels import create_channel
    from services.retrieval.catalog import chunked
    from services.retrieval.servicer import product_to_pb

    start = state.imported_through if state else 0
    earlier_seconds = state.seconds if state else 0.0
    started = time.perf_counter()
    done = 0
    finished_batches: set[int] = set()
    contiguous = 0  # batches 0..contiguous-1 (counted from `start`) have all finished
    last_report = started
    products = itertools.islice(generate_products(items, seed), start, None)
    async with create_channel(retrieval_address, 64 * 1024 * 1024, retry_refused=True) as channel:
        stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
        pending: set[asyncio.Task] = set()

        async def send(number: int, batch) -> tuple[int, int]:
            await stub.UpsertProducts(
                retrieval_pb2.UpsertProductsRequest(products=[product_to_pb(p) for p in batch]), timeout=600
            )
            return number, len(batch)

        def record(finished: Iterable[asyncio.Task]) -> int:
            nonlocal contiguous
            count = 0
            for task in finished:
                number, size = task.result()
                finished_batches.add(number)
                count += size
            while contiguous in finished_batches:
                contiguous += 1
            if state is not None and state_path is not None:
                state.imported_through = min(items, start + contiguous * IMPORT_BATCH)
                state.seconds = earlier_seconds + time.perf_counter() - started
                state.write(state_path)
            return count

        for number, batch in enumerate(chunked(products, IMPORT_BATCH)):
            if len(pending) >= IMPORT_CONCURRENCY:
                finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                done += record(finished)
            pending.add(asyncio.create_task(send(number, batch)))
            now = time.perf_counter()
            if progress and now - last_report > 30:
                last_report = now
                rate = done / (now - started)
                left = (items - start - done) / rate if rate else float("nan")
                print(f"  imported {start + done:,}/{items:,} ({rate:.0f}/s, about {left / 60:.0f} min left)",
                      file=sys.stderr, flush=True)
        if pending:
            done += record((await asyncio.wait(pending))[0])
    return time.perf_counter() - started
