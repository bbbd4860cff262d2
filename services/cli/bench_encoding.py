"""`shelfwise bench encoding`: catalogue encoding throughput, full batches padded to the length
buckets against padded only to their longest text, side by side in one run.

Catalogue encoding (an import, a bench index build) sends the text encoder full batches of
product texts. Length buckets exist so that Triton can merge requests of different lengths;
a full batch merges with nothing, so `TextEncoder` pads it only to its longest text. This
command shows what that saves on a given catalogue: the batches `TextEncoder.encode` sends for
the same products (`TextEncoder.batches`), run through the embedded ONNX Runtime both ways in
alternating rounds (the median of each is reported, as the machine may be shared), with the
tokens computed per real token and the largest difference between the two sets of vectors
(padding is masked, so the vectors must agree).

Products are the synthetic catalogue's (`services.cli.synthetic_catalog`; the output says so)
unless `--catalog` names a catalogue file.
"""

from __future__ import annotations

import itertools
import statistics
import time
from pathlib import Path

import numpy as np

from services.common.inference import EmbeddedOnnxRuntime
from services.common.text_encoder import OUTPUT_NAME, TextEncoder

PADDINGS = (("length buckets", True), ("longest in batch", False))


def catalog_texts(catalog: Path | None, items: int, seed: int) -> tuple[list[str], str]:
    """The embedding texts of the first `items` products, and where they came from."""
    if catalog is None:
        from services.cli.synthetic_catalog import DESCRIPTION, generate_products

        products = list(itertools.islice(generate_products(items, seed), items))
        return [product.embedding_text() for product in products], f"{DESCRIPTION}, seed {seed}"
    from services.retrieval.catalog import read_catalog

    products, _ = read_catalog(catalog)
    return [product.embedding_text() for product in products[:items]], str(catalog)


async def bench_encoding(repository: Path, model: str, texts: list[str], source: str, rounds: int,
                         threads: int | None = None) -> str:
    backend = EmbeddedOnnxRuntime(repository, threads=threads)
    encoder = TextEncoder(backend, model_name=model)
    # Exactly the batches `TextEncoder.encode` sends, padded either way.
    inputs = {
        label: [(ids, mask) for _, ids, mask in encoder.batches(texts, "passage", pad_full_batches_to_bucket=to_bucket)]
        for label, to_bucket in PADDINGS
    }
    real_tokens = sum(int(mask.sum()) for _, mask in inputs[PADDINGS[0][0]])
    backend.load(model)
    seconds: dict[str, list[float]] = {label: [] for label, _ in PADDINGS}
    vectors: dict[str, np.ndarray] = {}
    for _ in range(rounds):
        for label, _ in PADDINGS:
            started = time.perf_counter()
            outputs = [
                (await backend.infer(model, {"input_ids": ids, "attention_mask": mask}, [OUTPUT_NAME]))[OUTPUT_NAME]
                for ids, mask in inputs[label]
            ]
            seconds[label].append(time.perf_counter() - started)
            vectors[label] = np.concatenate(outputs)
    difference = float(np.max(np.abs(vectors[PADDINGS[0][0]] - vectors[PADDINGS[1][0]])))
    lines = [
        f"{len(texts):,} product texts from {source}",
        f"model {encoder.version}, embedded ONNX Runtime ({backend.threads} threads), batches of "
        f"{encoder.max_batch_size} sorted by token count, "
        f"{rounds} alternating rounds, median",
        f"{'padding':<18} {'tokens computed / real':>22} {'products/s':>11} {'ratio':>6}",
    ]
    reference = len(texts) / statistics.median(seconds[PADDINGS[0][0]])
    for label, _ in PADDINGS:
        computed = sum(ids.size for ids, _ in inputs[label])
        rate = len(texts) / statistics.median(seconds[label])
        lines.append(f"{label:<18} {computed / real_tokens:>22.2f} {rate:>11.1f} {rate / reference:>5.2f}x")
    lines.append(f"largest difference between the two paddings' vectors: {difference:.1e}")
    return "\n".join(lines)
