"""`shelfwise bench encoding`: catalogue encoding throughput, side by side in one run, of
either two paddings of one version of the model (the served one, or `--versions N`) or two
versions of it (`--versions 1,2`: an fp32 version against its int8 copy from `shelfwise
quantize`, say).

Catalogue encoding (an import, a bench index build) sends the text encoder full batches of
product texts. Length buckets exist so that Triton can merge requests of different lengths;
a full batch merges with nothing, so `TextEncoder` pads it only to its longest text. By default
this command shows what that saves on a given catalogue: the batches `TextEncoder.encode` sends
for the same products (`TextEncoder.batches`), run through the embedded ONNX Runtime both ways.
With `--versions` it runs those same batches through each version instead. Configurations run
in alternating rounds (the median of each is reported, as the machine may be shared), with the
tokens computed per real token, and the largest difference and the smallest cosine between the
first configuration's vectors and each other's (paddings are masked, so they must agree; an
int8 version keeps a cosine of about 0.99).

Products are the synthetic catalogue's (`services.local.synthetic_catalog`; the output says so)
unless `--catalog` names a catalogue file.
"""

from __future__ import annotations

import itertools
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from services.common.inference import EmbeddedOnnxRuntime
from services.common.text_encoder import OUTPUT_NAME, TextEncoder

PADDINGS = (("length buckets", True), ("longest in batch", False))


def catalog_texts(catalog: Path | None, items: int, seed: int) -> tuple[list[str], str]:
    """The embedding texts of the first `items` products, and where they came from."""
    if catalog is None:
        from services.local.synthetic_catalog import DESCRIPTION, generate_products

        products = list(itertools.islice(generate_products(items, seed), items))
        return [product.embedding_text() for product in products], f"{DESCRIPTION}, seed {seed}"
    from services.retrieval.catalog import read_catalog

    products, _ = read_catalog(catalog)
    return [product.embedding_text() for product in products[:items]], str(catalog)


@dataclass(frozen=True)
class Configuration:
    label: str
    version: int | None  # None: the version the services would serve
    pad_full_batches_to_bucket: bool


def configurations(versions: Sequence[int] = ()) -> list[Configuration]:
    """Each of two or more `versions` padded as `encode` pads; else the two paddings of the one
    version given, or of the version the services would serve."""
    if len(versions) > 1:
        return [Configuration(f"version {version}", version, False) for version in versions]
    return [Configuration(label, versions[0] if versions else None, to_bucket) for label, to_bucket in PADDINGS]


@dataclass(frozen=True)
class EncodingRuns:
    """How `bench_encoding` measures: alternating rounds (the median is reported), ONNX Runtime
    threads (None: the services' own), and the model versions to compare (none: the paddings)."""

    rounds: int = 3
    threads: int | None = None
    versions: Sequence[int] = ()


async def bench_encoding(repository: Path, model: str, texts: list[str], source: str, runs_of: EncodingRuns) -> str:
    rounds, threads = runs_of.rounds, runs_of.threads
    runs = configurations(runs_of.versions)
    backends, inputs, names = {}, {}, {}
    sessions: dict[int | None, EmbeddedOnnxRuntime] = {}  # one per version: the paddings share theirs
    for run in runs:
        if run.version not in sessions:
            sessions[run.version] = EmbeddedOnnxRuntime(
                repository, {model: run.version} if run.version else None, threads=threads
            )
            sessions[run.version].load(model)
        backend = sessions[run.version]
        encoder = TextEncoder(backend, model_name=model)
        # Exactly the batches `TextEncoder.encode` sends.
        inputs[run.label] = [
            (ids, mask)
            for _, ids, mask in encoder.batches(texts, "passage", pad_full_batches_to_bucket=run.pad_full_batches_to_bucket)
        ]
        backends[run.label], names[run.label] = backend, encoder.version
    real_tokens = sum(int(mask.sum()) for _, mask in inputs[runs[0].label])
    seconds: dict[str, list[float]] = {run.label: [] for run in runs}
    vectors: dict[str, np.ndarray] = {}
    for _ in range(rounds):
        for run in runs:
            backend = backends[run.label]
            started = time.perf_counter()
            outputs = [
                (await backend.infer(model, {"input_ids": ids, "attention_mask": mask}, [OUTPUT_NAME]))[OUTPUT_NAME]
                for ids, mask in inputs[run.label]
            ]
            seconds[run.label].append(time.perf_counter() - started)
            vectors[run.label] = np.concatenate(outputs)
    first = runs[0].label
    lines = [
        f"{len(texts):,} product texts from {source}",
        f"model {', '.join(dict.fromkeys(names.values()))}, embedded ONNX Runtime ({backends[first].threads} threads), "
        f"batches of {TextEncoder(backends[first], model_name=model).max_batch_size} sorted by token count, "
        f"{rounds} alternating rounds, median",
        f"{'configuration':<18} {'tokens computed / real':>22} {'products/s':>11} {'ratio':>6} "
        f"{'max |diff|':>10} {'min cosine':>10}",
    ]
    reference = len(texts) / statistics.median(seconds[first])
    for run in runs:
        computed = sum(ids.size for ids, _ in inputs[run.label])
        rate = len(texts) / statistics.median(seconds[run.label])
        difference = float(np.max(np.abs(vectors[first] - vectors[run.label])))
        # Rows are unit length, so the row-wise dot product is the cosine.
        cosine = float(np.min(np.sum(vectors[first] * vectors[run.label], axis=1)))
        lines.append(
            f"{run.label:<18} {computed / real_tokens:>22.2f} {rate:>11.1f} {rate / reference:>5.2f}x "
            f"{difference:>10.1e} {cosine:>10.5f}"
        )
    lines.append(f"differences and cosines are against the first row ({first}), text by text")
    return "\n".join(lines)
