"""Bringing a catalogue into a running system: a catalogue file (JSONL, CSV, Parquet) or a list
of products, upserted in batches through the retrieval service; and the demo catalogue that
`shelfwise up` imports. Used by the CLI, the evaluations, the simulator and the tests; it
imports nothing from training/ or the CLI, so training can use it without an import circle."""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path


def read_catalog_file(path: Path) -> list:
    """The validated products of a catalogue file (JSONL, CSV, Parquet). Raises ValueError
    listing the bad rows (the first 20) when any row is invalid: nothing is imported then."""
    from services.retrieval.catalog import read_catalog

    products, errors = read_catalog(path)
    if errors:
        listed = "\n".join(f"  {e.message}" for e in errors[:20])
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise ValueError(f"{path}: {len(errors)} invalid rows, nothing imported:\n{listed}{more}")
    return products


async def import_catalog(path: Path, retrieval_address: str, batch_size: int = 200, progress: bool = True) -> tuple[int, int]:
    """Upserts every product of a catalogue file through the retrieval service; returns
    (inserted, updated). Raises ValueError listing the bad rows (nothing is imported then)."""
    return await import_products(read_catalog_file(path), retrieval_address, batch_size, progress)


async def import_products(products, retrieval_address: str, batch_size: int = 200, progress: bool = True) -> tuple[int, int]:
    """Upserts validated products through the retrieval service; returns (inserted, updated)."""
    from shelfwise.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc
    from tqdm import tqdm

    from services.common.channels import create_channel
    from services.retrieval.catalog import chunked
    from services.retrieval.servicer import product_to_pb

    inserted = updated = 0
    async with create_channel(retrieval_address, 64 * 1024 * 1024, retry_refused=True) as channel:
        stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
        with tqdm(total=len(products), unit="product", desc="import", disable=not progress or not sys.stderr.isatty()) as bar:
            for batch in chunked(products, batch_size):
                response = await stub.UpsertProducts(
                    retrieval_pb2.UpsertProductsRequest(products=[product_to_pb(p) for p in batch]), timeout=300
                )
                inserted += response.inserted
                updated += response.updated
                bar.update(len(batch))
    return inserted, updated


async def changed_products(products, retrieval_address: str) -> list:
    """The products that retrieval does not hold exactly as given. An upsert re-encodes its
    products, so a run against a kept database imports only what changed since the last one."""
    from shelfwise.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc

    from services.common.channels import create_channel
    from services.retrieval.catalog import chunked
    from services.retrieval.servicer import product_to_pb

    changed = []
    async with create_channel(retrieval_address, 64 * 1024 * 1024, retry_refused=True) as channel:
        stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
        for batch in chunked(products, 1000):
            response = await stub.GetProducts(
                retrieval_pb2.GetProductsRequest(product_ids=[p.id for p in batch]), timeout=60
            )
            held = {message.id: message for message in response.products}
            changed += [p for p in batch if not _holds(held.get(p.id), product_to_pb(p))]
    return changed


def _holds(held, given) -> bool:
    """Whether retrieval holds the product as the file gives it; a product given without a
    listing time keeps the one its first import gave it."""
    if held is None:
        return False
    if not given.listed_at:
        given.listed_at = held.listed_at
    return held == given


def demo_catalog_path() -> Path:
    return Path(str(resources.files("services.local") / "demo_catalog.jsonl"))
