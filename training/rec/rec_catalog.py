"""The served sequence model, trained on the shop's own behaviour and exported for retrieval.

`shelfwise train rec --events` reads, from the system's PostgreSQL:

- every shopper's interactions (clicks, add-to-carts, purchases; by user id, else by session),
  oldest first, with runs on one product merged exactly as `events.ListUserHistory` merges them
  at serving time, so the model learns from the sequences it will later be shown;
- the catalogue and the text embeddings retrieval cached for it, under the text encoder the
  services use (the content space: `SHELFWISE_MULTILINGUAL_ENCODER`, else `SHELFWISE_TEXT_ENCODER`; pinned versions honoured).

It trains the sequential recommender (`training.rec.rec_training.train_model`) with the text
embeddings as content features, so that the content part of every item vector is a learned
projection of its text, and exports the next version of `user_sequence_encoder`:

    <repository>/user_sequence_encoder/<version>/model.onnx     history, history_mask -> user_vector
    <repository>/user_sequence_encoder/<version>/items.npz      product_ids, vectors, history_vectors,
                                                                content_weight, content_bias
    <repository>/user_sequence_encoder/<version>/metadata.json  max_length, dim, text_encoder, training report

`items.npz` holds only products that occur in the training sequences: an ID embedding that
never received a gradient is noise, so every other product (and every product added later)
gets its projected text vector at serving time (`services.retrieval.personal`). Retrieval
loads the newest version at start-up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from services.common.config import content_encoder_model, database_url, model_repository, parse_versions
from services.common.model_versions import install_staged, next_version, staging_folder, version_dir
from services.events.queries import HistoryEntry, collapse_history
from training.onnx_export import cpu_session, max_abs_difference, require_within
from training.rec.rec_training import RecSettings
from training.rec.sequential_data import SequenceData

MODEL_NAME = "user_sequence_encoder"
# Below this many shoppers a validation hold-out is too noisy to stop on: train a fixed
# number of epochs on everything instead.
MIN_SHOPPERS_TO_VALIDATE = 1_000
VERIFY_BATCH_SIZES = (1, 3)

_INTERACTIONS = """
SELECT CASE WHEN user_id <> '' THEN 'user:' || user_id ELSE 'session:' || session_id END AS shopper,
       product_id, type, occurred_at
FROM interactions
WHERE user_id <> '' OR session_id <> ''
ORDER BY shopper, occurred_at, received_at, event_id
"""


@dataclass(frozen=True)
class CatalogBehaviour:
    """What training reads: shopper sequences of product ids and a text vector per product."""

    sequences: list[list[str]]
    text_vectors: Mapping[str, np.ndarray]
    text_encoder: str


def shopper_sequences(rows: Sequence[tuple[str, str, str, object]]) -> list[list[str]]:
    """(shopper, product_id, type, occurred_at) rows ordered by shopper then time -> one
    collapsed product-id sequence per shopper."""
    sequences: list[list[str]] = []
    current, entries = None, []
    for shopper, product_id, kind, occurred_at in list(rows) + [(None, "", "click", None)]:
        if shopper != current:
            if entries:
                steps = collapse_history(entries[::-1], limit=len(entries))
                sequences.append([step.product_id for step in steps])
            current, entries = shopper, []
        if shopper is not None:
            entries.append(HistoryEntry(product_id, kind, occurred_at))
    return sequences


def sequence_data(behaviour: CatalogBehaviour, name: str = "events") -> tuple[SequenceData, list[str]]:
    """Item ids 1..N over every product with a text vector (sorted ids, so runs repeat), and
    the sequences mapped onto them; products without a text vector (deleted since) drop out."""
    product_ids = sorted(behaviour.text_vectors)
    item_of = {product_id: index for index, product_id in enumerate(product_ids, start=1)}
    dimension = len(next(iter(behaviour.text_vectors.values())))
    content = np.zeros((len(product_ids) + 1, dimension), dtype=np.float32)
    for product_id, item in item_of.items():
        content[item] = behaviour.text_vectors[product_id]
    sequences = [[item_of[p] for p in sequence if p in item_of] for sequence in behaviour.sequences]
    sequences = [s for s in sequences if len(s) >= 2]
    return SequenceData(name=name, sequences=sequences, num_items=len(product_ids), content=content), product_ids


def train_and_export(
    behaviour: CatalogBehaviour, repository: Path, settings: RecSettings | None = None, progress: bool = True
) -> tuple[Path, dict]:
    """Trains on the behaviour and installs the next version; returns (version folder, report)."""
    from training.rec.rec_training import train_model

    data, product_ids = sequence_data(behaviour)
    if not data.sequences:
        raise ValueError("no shopper has interacted with two or more catalogue products yet: nothing to learn from")
    settings = settings or RecSettings(epochs=40, patience=5)
    if len(data.sequences) < MIN_SHOPPERS_TO_VALIDATE:
        settings = replace(settings, validate=False)
    settings = replace(settings, use_attributes=False)
    started = time.monotonic()
    model, report = train_model(data, settings, progress=progress)
    report["training_seconds"] = round(time.monotonic() - started, 1)
    trained_items = sorted({item for sequence in data.sequences for item in sequence})
    return export_version(model, product_ids, trained_items, behaviour.text_encoder, repository, report), report


def export_version(model, product_ids, trained_items, text_encoder: str, repository: Path, report: dict) -> Path:
    """Writes model.onnx, items.npz and metadata.json into a staging folder, checks ONNX Runtime
    against torch, then renames it to the next version (a half-written version is never seen)."""
    import torch

    from training.rec.sequential_model import export_user_encoder

    version = next_version(repository, MODEL_NAME)
    with staging_folder(repository, MODEL_NAME, version) as staging:
        export_user_encoder(model, staging / "model.onnx")
        with torch.no_grad():
            table, scoring = (t.numpy() for t in model.item_tables())
        weight, bias = model.content_projection()
        np.savez(
            staging / "items.npz",
            product_ids=np.array([product_ids[item - 1] for item in trained_items]),
            vectors=scoring[trained_items].astype(np.float32),
            history_vectors=table[trained_items].astype(np.float32),
            content_weight=weight.astype(np.float32),
            content_bias=bias.astype(np.float32),
        )
        verify_onnx(model, staging / "model.onnx", table)
        metadata = {
            "model": MODEL_NAME,
            "version": version,
            "max_length": model.config.max_length,
            "dim": model.config.dim,
            "text_encoder": text_encoder,
            "trained_on": "events",
            "products_in_training": len(trained_items),
            "catalogue_products": len(product_ids),
            "report": {k: v for k, v in report.items() if k != "epochs"},
        }
        (staging / "metadata.json").write_text(json.dumps(metadata, indent=2, default=str) + "\n")
        target = version_dir(repository, MODEL_NAME, version)
        install_staged(staging, target)
        return target


def verify_onnx(model, path: Path, table: np.ndarray) -> None:
    """ONNX Runtime must give torch's user vectors for short and full histories."""
    import torch

    session = cpu_session(path)
    rng = np.random.default_rng(0)
    length, dim = model.config.max_length, model.config.dim
    for batch in VERIFY_BATCH_SIZES:
        history = np.zeros((batch, length, dim), dtype=np.float32)
        mask = np.zeros((batch, length), dtype=np.float32)
        for row in range(batch):
            steps = int(rng.integers(1, length + 1))
            history[row, length - steps:] = table[rng.integers(1, len(table), steps)]
            mask[row, length - steps:] = 1.0
        with torch.no_grad():
            expected = model.encode_history(torch.from_numpy(history), torch.from_numpy(mask)).numpy()
        (actual,) = session.run(["user_vector"], {"history": history, "history_mask": mask})
        require_within(max_abs_difference([actual], [expected]), 1e-4, f"torch at batch {batch}",
                       subject="ONNX user encoder")


async def read_behaviour(dsn: str, repository: Path, encoder_name: str, pinned: Mapping[str, int]) -> CatalogBehaviour:
    """Sequences and text vectors from the system's PostgreSQL. Products whose embedding is not
    cached yet (retrieval has not run since they were imported) are encoded here."""
    import asyncpg

    from services.common.inference import EmbeddedOnnxRuntime
    from services.common.text_encoder import TextEncoder
    from services.retrieval.store import ProductStore

    backend = EmbeddedOnnxRuntime(repository, pinned)
    encoder = TextEncoder(backend, model_name=encoder_name)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        rows = await pool.fetch(_INTERACTIONS)
        store = ProductStore(pool)
        products = await store.load_all()
        cached = await store.load_embeddings(encoder.version)
    finally:
        await pool.close()
    vectors: dict[str, np.ndarray] = {}
    missing = []
    for product in products:
        entry = cached.get(product.id)
        if entry is not None and entry[0] == product.content_hash():
            vectors[product.id] = entry[1]
        else:
            missing.append(product)
    if missing:
        encoded = await encoder.encode([p.embedding_text() for p in missing], kind="passage", timeout=600)
        vectors.update({p.id: v for p, v in zip(missing, encoded)})
    await backend.close()
    sequences = shopper_sequences([(r["shopper"], r["product_id"], r["type"], r["occurred_at"]) for r in rows])
    return CatalogBehaviour(sequences, vectors, encoder.version)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shelfwise train rec --events",
        description="Train the served sequence model on the shop's logged interactions and export the next "
        "user_sequence_encoder version (retrieval loads it at start-up).",
    )
    parser.add_argument("--events", action="store_true", help="train on the events in PostgreSQL (this command)")
    parser.add_argument("--database-url", default=None, help="PostgreSQL DSN (default: SHELFWISE_DATABASE_URL)")
    parser.add_argument("--repository", type=Path, default=None, help="model repository (default: SHELFWISE_MODEL_REPOSITORY)")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import os

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    dsn = args.database_url or database_url()
    repository = args.repository or model_repository()
    pinned = parse_versions(os.environ.get("SHELFWISE_MODEL_VERSIONS", ""))
    behaviour = asyncio.run(read_behaviour(dsn, repository, content_encoder_model(), pinned))
    print(f"{len(behaviour.sequences)} shoppers, {len(behaviour.text_vectors)} catalogue products "
          f"({behaviour.text_encoder} embeddings)", file=sys.stderr)
    try:
        folder, report = train_and_export(
            behaviour, repository, RecSettings(epochs=args.epochs, patience=5, seed=args.seed), progress=not args.quiet
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"exported {folder} ({report['training_seconds']} s, {report['epochs_run']} epochs); "
          "restart retrieval to serve it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
