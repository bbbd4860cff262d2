"""One text encoder's view of the catalogue: product vectors and the query side that reads them.

Retrieval keeps up to two of these, slot for slot with the catalogue (DESIGN §1): an English
space (MiniLM by default) that reads English search text and the English rendering of a Chinese
query, and a multilingual space (the Universal Sentence Encoder by default) that reads the
query as the shopper typed it. Which text goes to which space is the retriever's routing; a
space only embeds, caches and scores.

Encoding search text is most of a search's CPU on a CPU-only machine, so query vectors are kept
in an LRU cache (shops' head queries repeat), concurrent texts are encoded in one batch
(`QueryBatcher`) and concurrent exact dense searches share one matrix product; all measured
with `shelfwise bench search`.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

import numpy as np

from services.common.batching import MicroBatcher
from services.common.text_encoder import TextEncoder
from services.retrieval.dense import DenseIndex

# Query vectors kept per space (about 1.5-2 KB each): shop queries repeat a lot (the head
# queries are most of the traffic), and encoding one is most of a search's CPU.
QUERY_CACHE_SIZE = 10_000


class QueryVectorCache:
    """Least-recently-used query text -> vector. Only valid for one encoder version, which is
    fixed for the life of a space (a new model version means a restart)."""

    def __init__(self, capacity: int = QUERY_CACHE_SIZE):
        self.capacity = capacity
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, text: str) -> np.ndarray | None:
        vector = self._vectors.get(text)
        if vector is None:
            self.misses += 1
            return None
        self._vectors.move_to_end(text)
        self.hits += 1
        return vector

    def put(self, text: str, vector: np.ndarray) -> None:
        if self.capacity <= 0:
            return
        vector = np.array(vector, dtype=np.float32)  # its own copy, not a view of a batch
        self._vectors[text] = vector
        self._vectors.move_to_end(text)
        while len(self._vectors) > self.capacity:
            self._vectors.popitem(last=False)

    def __len__(self) -> int:
        return len(self._vectors)


class QueryBatcher:
    """Encodes concurrent search texts together (`MicroBatcher`; a repeated text once per
    batch): measured here, 16 ms of CPU per query alone, 9-10 ms in batches of 4-16.

    Every vector a batch computes goes into `cache`, including those whose search stopped
    waiting meanwhile (overload shedding): leaving them out made repeated queries encode again
    exactly when the encoder was behind, and the queue ran away (`shelfwise bench search`)."""

    def __init__(self, encoder: TextEncoder, max_batch: int = 16, cache: QueryVectorCache | None = None):
        self._encoder = encoder
        self._cache = cache
        self._batcher = MicroBatcher(self._encode_texts, "retrieval.encode_query", max_batch)

    async def encode(self, text: str) -> np.ndarray:
        return await self._batcher.submit(text)

    async def _encode_texts(self, texts: list[str]) -> list[np.ndarray]:
        unique = list(dict.fromkeys(texts))
        vectors = await self._encoder.encode(unique, kind="query")
        if self._cache is not None:
            for text, vector in zip(unique, vectors):
                self._cache.put(text, vector)
        row = {text: n for n, text in enumerate(unique)}
        return [vectors[row[text]] for text in texts]


class VectorSpace:
    """An encoder, the product vectors it made (a `DenseIndex`, slot for slot with the
    catalogue) and its query side: `text_vector` (cached, batched) and `scores_for` (the exact
    search's matrix product, batched across concurrent searches, off the event loop)."""

    def __init__(self, encoder: TextEncoder, query_cache_size: int = QUERY_CACHE_SIZE):
        self.encoder = encoder
        self.index = DenseIndex(encoder.dimension)
        self.query_cache = QueryVectorCache(query_cache_size)
        self._query_batcher = QueryBatcher(encoder, cache=self.query_cache)
        # Exact dense scores of concurrent searches in one matrix product: the catalogue matrix
        # is read once per batch instead of once per query (10k x 384 here: 2.7 ms for one
        # query, 1.2 ms per query in fours, 0.8 in eights).
        self._score_batcher = MicroBatcher(self._score_queries, "retrieval.dense_scores", max_batch=32)

    @property
    def version(self) -> str:
        """"<model>/<version>": product vectors are cached in PostgreSQL under it."""
        return self.encoder.version

    async def text_vector(self, text: str) -> np.ndarray:
        vector = self.query_cache.get(text)
        if vector is None:
            vector = await self._query_batcher.encode(text)  # cached by the batcher
        return vector

    async def mean_vector(self, texts: list[str]) -> np.ndarray:
        """The normalised mean of the texts' vectors (each text cached on its own)."""
        vectors = await asyncio.gather(*(self.text_vector(text) for text in texts))
        if len(vectors) == 1:
            return vectors[0]
        mean = np.sum(vectors, axis=0)
        return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32, copy=False)

    def exact(self) -> bool:
        """Whether a search scores every slot (small catalogues) rather than walking HNSW."""
        return self.index.slots <= self.index.exact_threshold

    async def scores_for(self, query_vector: np.ndarray) -> np.ndarray:
        return await self._score_batcher.submit(query_vector)

    async def _score_queries(self, query_vectors: list[np.ndarray]) -> list[np.ndarray]:
        """Every slot's inner product with each query, computed in a worker thread (numpy
        releases the GIL, so the event loop serves other requests meanwhile)."""
        scores = await asyncio.to_thread(self.index.all_scores, np.stack(query_vectors))
        return list(scores)

    async def encode_products(self, texts: list[str], timeout: float) -> np.ndarray:
        return await self.encoder.encode(texts, kind="passage", timeout=timeout)
