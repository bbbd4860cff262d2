"""The search pipelines the evaluations compare: BM25 (ours and bm25s), dense retrieval over one
encoder of the model repository (catalogue vectors cached by model fingerprint), the hybrid
fusion, and the full local stack (FullPipeline, which starts the services and searches through
the gateway)."""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from training.search.search_judgments import DEPTH, Ranking


class Pipeline:
    """Returns, for each query text, up to DEPTH (product id, score) best first."""

    name: str

    async def search(self, texts: Sequence[str]) -> list[Ranking]:
        raise NotImplementedError

    async def close(self) -> None:
        return None


class LexicalPipeline(Pipeline):
    name = "bm25"

    def __init__(self, products):
        from services.retrieval.lexical import LexicalIndex

        self._index = LexicalIndex()
        self._index.upsert(products)

    async def search(self, texts):
        return [self._index.search(text, DEPTH)[0] for text in texts]


class Bm25sPipeline(Pipeline):
    name = "bm25s"

    def __init__(self, products):
        import bm25s
        import Stemmer

        self._stemmer = Stemmer.Stemmer("english")
        self._ids = [p.id for p in products]
        corpus = [" ".join(part for part in (p.title, p.brand, p.category, p.description) if part) for p in products]
        self._retriever = bm25s.BM25()
        self._retriever.index(bm25s.tokenize(corpus, stopwords="en", stemmer=self._stemmer, show_progress=False),
                              show_progress=False)

    async def search(self, texts):
        import bm25s

        results = []
        for text in texts:
            tokens = bm25s.tokenize([text], stopwords="en", stemmer=self._stemmer, show_progress=False)
            if not tokens.vocab:
                results.append([])
                continue
            k = min(DEPTH, len(self._ids))
            documents, scores = self._retriever.retrieve(tokens, k=k, show_progress=False, n_threads=1)
            results.append([(self._ids[d], float(s)) for d, s in zip(documents[0], scores[0]) if s > 0])
        return results


class DensePipeline(Pipeline):
    def __init__(self, name: str, encoder, vectors: np.ndarray, ids: list[str]):
        self.name = name
        self._encoder = encoder
        self._vectors = vectors
        self._ids = ids

    async def search(self, texts):
        queries = await self._encoder.encode(list(texts), kind="query", timeout=600)
        scores = queries @ self._vectors.T
        results = []
        for row in scores:
            top = np.argpartition(-row, min(DEPTH, len(row) - 1))[:DEPTH]
            top = top[np.argsort(-row[top])]
            results.append([(self._ids[i], float(row[i])) for i in top])
        return results


class HybridPipeline(Pipeline):
    name = "hybrid"

    def __init__(self, lexical: Pipeline, english: Pipeline, multilingual: Pipeline,
                 fuse: Callable[[Ranking, Ranking, Ranking], Ranking]):
        self._lexical, self._english, self._multilingual, self._fuse = lexical, english, multilingual, fuse

    async def search(self, texts):
        lexical = await self._lexical.search(texts)
        english = await self._english.search(texts)
        multilingual = await self._multilingual.search(texts)
        return [self._fuse(l, e, m)[:DEPTH] for l, e, m in zip(lexical, english, multilingual)]


class FullPipeline(Pipeline):
    """The whole system on free ports; queries through gateway.Search."""

    name = "full"

    def __init__(self, stack):
        self._stack = stack
        # Stage -> number of responses that bypassed it; reported, since a degraded stage
        # would otherwise silently lower (or flatter) the figures.
        self.degraded: dict[str, int] = {}
        self.encoder_model = stack.environ.get("SHELFWISE_TEXT_ENCODER", "")

    @classmethod
    async def start(cls, catalog: Path, products, model_repository: Path, cache: Path) -> "FullPipeline":
        from services.local.stack import LocalStack, StackSettings

        # One PostgreSQL per catalogue, kept between runs: products and their embeddings (cached
        # per encoder version) survive, so the next run does not re-encode the catalogue.
        stack = LocalStack(StackSettings(
            state_dir=cache / f"system-{_file_digest(catalog)}", model_repository=model_repository,
            environ={"SHELFWISE_VOCABULARY_REFRESH_SECONDS": "2"},
        ))
        await stack.start(timeout=600)
        try:
            started = time.monotonic()
            # Returns once query understanding reads the whole catalogue.
            inserted, updated = await stack.sync_catalog(products)
            print(f"  full: catalogue synced ({inserted} new, {updated} updated) in "
                  f"{time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)
        except BaseException:
            await stack.stop()
            raise
        return cls(stack)

    def address(self, service: str) -> str:
        return self._stack.address(service)

    @property
    def encoders(self) -> list[str]:
        """The text encoders retrieval embeds with (the English space's first)."""
        from services.common.config import multilingual_encoder_model, text_encoder_model

        environ = {**os.environ, **self._stack.environ}  # as the services see it
        return [name for name in (text_encoder_model(environ), multilingual_encoder_model(environ)) if name]

    async def search(self, texts):
        from shelfwise.gateway.v1 import gateway_pb2, gateway_pb2_grpc

        from services.common.channels import create_channel

        results = []
        async with create_channel(self._stack.address("gateway"), retry_refused=True) as channel:
            stub = gateway_pb2_grpc.GatewayServiceStub(channel)
            for text in texts:
                response = await stub.Search(
                    gateway_pb2.SearchRequest(query=text, page_size=DEPTH, user_id="eval", session_id="eval"),
                    timeout=30,
                )
                results.append([(item.product.id, float(item.score)) for item in response.results])
                for stage in response.degraded_stages:
                    self.degraded[stage] = self.degraded.get(stage, 0) + 1
        return results

    async def close(self):
        await self._stack.stop()


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def model_fingerprint(model_file: Path) -> str:
    """Identifies an exported model file without hashing hundreds of MB: path, size, mtime."""
    stat = Path(model_file).stat()
    return f"{Path(model_file).resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


async def encode_catalog(encoder, products, cache: Path, fingerprint: str) -> np.ndarray:
    """Passage vectors of every product, cached per model file and product texts."""
    texts = [p.embedding_text() for p in products]
    key = hashlib.sha256()
    key.update(encoder.version.encode())
    key.update(fingerprint.encode())
    for text in texts:
        key.update(text.encode("utf-8"))
        key.update(b"\x00")
    path = cache / f"vectors-{key.hexdigest()[:24]}.npy"
    if path.is_file():
        return np.load(path)
    from tqdm import tqdm

    vectors = []
    chunk = 512
    with tqdm(total=len(texts), unit="product", desc=f"encode {encoder.version}", file=sys.stderr) as bar:
        for start in range(0, len(texts), chunk):
            vectors.append(await encoder.encode(texts[start : start + chunk], kind="passage", timeout=600))
            bar.update(len(texts[start : start + chunk]))
    stacked = np.concatenate(vectors).astype(np.float32)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, stacked)
    return stacked
