"""Dense retrieval: nearest products by embedding, with FAISS HNSW for large candidate sets.

Vectors are unit length, so inner product is cosine similarity. Each product occupies a slot
(its row in `vectors` and its id in FAISS). An updated product gets a new slot and the old one
becomes a tombstone; searches only see live slots that pass the filters (a FAISS ID selector).
When tombstones outnumber live slots the index is compacted. When the allowed set is small,
exact search over it is both faster and exact, so HNSW is used only above `exact_threshold`.

Vectors live in a buffer that doubles when full (`GrowingArray`; `vectors` and `alive` are
views of its used part): appending by concatenation copied the whole matrix on every upsert
batch, which made importing a large catalogue quadratic (1M products in batches of 500: ~1.5 TB
copied).
"""

from __future__ import annotations

import faiss
import numpy as np

from services.retrieval.growing_array import GrowingArray


class DenseIndex:
    def __init__(self, dimension: int, exact_threshold: int = 20_000, hnsw_neighbors: int = 32, ef_search: int = 128):
        self.dimension = dimension
        self.exact_threshold = exact_threshold
        self._hnsw_neighbors = hnsw_neighbors
        self._ef_search = ef_search
        self._reset()

    def _reset(self) -> None:
        self._vectors = GrowingArray(np.float32, (self.dimension,))
        self._alive = GrowingArray(bool)
        self._hnsw = self._new_hnsw()

    @property
    def vectors(self) -> np.ndarray:
        return self._vectors.values

    @property
    def alive(self) -> np.ndarray:
        return self._alive.values

    def _new_hnsw(self) -> faiss.IndexHNSWFlat:
        index = faiss.IndexHNSWFlat(self.dimension, self._hnsw_neighbors, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        return index

    @property
    def slots(self) -> int:
        return len(self._alive)

    def add(self, vectors: np.ndarray) -> np.ndarray:
        """Appends vectors; returns their slots."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dimension)
        slots = self._vectors.append(vectors)
        self._alive.append(np.ones(len(vectors), dtype=bool))
        self._hnsw.add(vectors)
        return slots

    def remove(self, slots: np.ndarray) -> None:
        self.alive[slots] = False

    def needs_compaction(self) -> bool:
        dead = self.slots - int(self.alive.sum())
        return dead > 1_000 and dead > int(self.alive.sum())

    def compact(self) -> np.ndarray:
        """Rebuilds over live slots; returns old slot → new slot (-1 for removed)."""
        live = np.flatnonzero(self.alive)
        mapping = np.full(self.slots, -1, dtype=np.int64)
        mapping[live] = np.arange(len(live))
        vectors = self.vectors[live]
        self._reset()
        self.add(vectors)
        return mapping

    def all_scores(self, queries: np.ndarray) -> np.ndarray:
        """Inner products with every slot: [slots] for one query [dimension], [B, slots] for
        queries [B, dimension]. The exact search's matrix product on its own, safe to run off
        the event loop (it reads the current buffer, which the index never changes in place
        below `slots`; compaction makes a new one). A row is for `search(all_scores=)`."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim == 1:
            return self.vectors @ queries.reshape(self.dimension)
        # [B, d] @ [d, slots]: BLAS reads the transposed matrix in place, no copy.
        return queries.reshape(-1, self.dimension) @ self.vectors.T

    def search(
        self, query: np.ndarray, limit: int, allowed: np.ndarray, all_scores: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(slots, cosine scores) best first among slots where `allowed` (live ∧ filters) holds.
        `all_scores`: `all_scores(query)` computed earlier over the same slots (used by exact
        search; ignored when the slot count has changed since)."""
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(1, self.dimension)
        # Counted, not listed: HNSW reads the bitmap; listing 1M allowed slots took 0.8-3.6 ms.
        allowed_count = np.count_nonzero(allowed)
        if allowed_count == 0 or limit <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        if allowed_count <= self.exact_threshold:
            allowed_slots = np.flatnonzero(allowed)
            if all_scores is not None and len(all_scores) == self.slots:
                scores = all_scores[allowed_slots]
            else:
                scores = self._exact_scores(allowed_slots, query[0])
            k = min(limit, len(allowed_slots))
            top = np.argpartition(-scores, k - 1)[:k]
            top = top[np.argsort(-scores[top], kind="stable")]
            return allowed_slots[top], scores[top]
        selector = faiss.IDSelectorBitmap(np.packbits(allowed, bitorder="little"))
        params = faiss.SearchParametersHNSW(sel=selector, efSearch=max(self._ef_search, limit))
        scores, slots = self._hnsw.search(query, limit, params=params)
        keep = slots[0] >= 0
        return slots[0][keep].astype(np.int64), scores[0][keep]

    def search_many(self, queries: np.ndarray, limit: int, allowed: np.ndarray) -> np.ndarray:
        """The union of each query's `limit` nearest slots where `allowed` holds (unordered);
        one matrix product (or one batched HNSW search) for all queries."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dimension)
        allowed_count = np.count_nonzero(allowed)
        if allowed_count == 0 or limit <= 0 or len(queries) == 0:
            return np.zeros(0, dtype=np.int64)
        if allowed_count <= self.exact_threshold:
            allowed_slots = np.flatnonzero(allowed)
            scores = self._exact_scores(allowed_slots, queries.T)
            k = min(limit, len(allowed_slots))
            top = np.argpartition(-scores, k - 1, axis=0)[:k]
            return allowed_slots[np.unique(top)]
        selector = faiss.IDSelectorBitmap(np.packbits(allowed, bitorder="little"))
        params = faiss.SearchParametersHNSW(sel=selector, efSearch=max(self._ef_search, limit))
        _, slots = self._hnsw.search(queries, limit, params=params)
        return np.unique(slots[slots >= 0]).astype(np.int64)

    def _exact_scores(self, allowed_slots: np.ndarray, queries: np.ndarray) -> np.ndarray:
        """Inner products of the allowed rows with the query (or the columns of queries). When
        most rows are allowed, one pass over the whole matrix then a pick of the allowed scores:
        gathering the allowed rows first copied the matrix on every search (10k x 384: 15 MB, most
        of dense retrieval's time)."""
        if len(allowed_slots) * 2 >= self.slots:
            return (self.vectors @ queries)[allowed_slots]
        return self.vectors[allowed_slots] @ queries

    def similarity(self, query: np.ndarray, slots: np.ndarray) -> np.ndarray:
        return self.vectors[slots] @ np.asarray(query, dtype=np.float32).reshape(self.dimension)
