"""The retrieval domain: keeps the lexical and dense indexes and the product table in step,
and answers candidate queries by fusing both lists (reciprocal rank fusion) under filters.

Personal retrieval (`services.retrieval.personal`): when a sequence model is deployed, every
product also has an item vector in a third index kept in step with the other two (same slots);
a shopper's history becomes a shopper vector, whose nearest items are the "for this user"
candidates. Without one, the history's recent text embeddings are the shopper's interests and
each interest's nearest products are the candidates. Either way `personal_score` is the
product's probability relative to the best candidate.

Filters are hard: every candidate matches every filter that is set. Upserts and deletes change
the indexes in place (no rebuild); PostgreSQL stays the system of record and the indexes are
rebuilt from it at start-up.

Encoding the search text is most of a search's CPU on a CPU-only machine, so query vectors
are kept in an LRU cache (shops' head queries repeat), concurrent texts are encoded in one
batch (`QueryBatcher`) and concurrent exact dense searches share one matrix product; all
measured with `shelfwise bench search`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Sequence

import numpy as np

from services.common.batching import MicroBatcher
from services.common.errors import DeadlineExceeded, InvalidArgument, NotFound, Unavailable
from services.common.metrics import RetrievalMetrics
from services.common.text_encoder import TextEncoder
from services.common.tracing import tracer
from services.retrieval.catalog import Product, validate_product
from services.retrieval.dense import DenseIndex
from services.retrieval.filters import CandidateFilters, FilterColumns
from services.retrieval.fusion import Fusion
from services.retrieval.lexical import LexicalIndex
from services.retrieval.personal import (
    MAX_HISTORY,
    TEXT_HISTORY,
    SequenceModel,
    relative_probability,
    text_history_interests,
    text_history_logits,
)
from services.retrieval.store import ProductStore

log = logging.getLogger(__name__)
_tracer = tracer(__name__)

MAX_LIMIT = 2_000
MAX_UPSERT = 1_000
# Per batch of 64 texts when encoding products; query encoding keeps the backend's short default.
BULK_ENCODE_TIMEOUT = 120.0
# Change times come from writers' transactions, which may commit a little after they are
# stamped: each sync looks this far behind its watermark (unchanged products are skipped).
SYNC_OVERLAP = timedelta(seconds=30)
# Which lists a text query draws from (RetrieveRequest.mode): both fused (the default), or one.
HYBRID, LEXICAL, DENSE = "hybrid", "lexical", "dense"
RETRIEVAL_MODES = (HYBRID, LEXICAL, DENSE)
# Query vectors kept (about 1.5 KB each at 384-d): shop queries repeat a lot (the head queries
# are most of the traffic), and encoding one is most of a search's CPU on a CPU-only machine
# (`shelfwise bench search`: ~20 of ~50 ms of CPU per search).
QUERY_CACHE_SIZE = 10_000


class QueryVectorCache:
    """Least-recently-used query text -> vector. Only valid for one encoder version, which is
    fixed for the life of a CatalogIndex (a new model version means a restart)."""

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


@dataclass(frozen=True)
class Candidate:
    product: Product
    lexical_score: float
    dense_score: float
    fused_score: float
    lexical_rank: int
    dense_rank: int
    lexical_coverage: float = 0.0
    personal_score: float = 0.0
    personal_rank: int = 0


@dataclass(frozen=True)
class RetrievalResult:
    candidates: list[Candidate]
    total_matching: int
    degraded: tuple[str, ...] = ()
    # What produced personal scores ("" when the request had no history).
    personal_model_version: str = ""


@dataclass(frozen=True)
class Shopper:
    """What personal retrieval knows of a shopper: the slots of their history, and either the
    sequence model's user vector or (text-history) their interests with recency log-weights."""

    history_slots: np.ndarray
    model_version: str
    vector: np.ndarray | None = None
    interests: np.ndarray | None = None
    interest_log_weights: np.ndarray | None = None


class CatalogIndex:
    """The catalogue's lexical and dense indexes. Products are embedded as passages and search
    text as a query: the encoder adds whatever its model expects for each ("passage: " /
    "query: " for e5)."""

    def __init__(
        self,
        store: ProductStore,
        encoder: TextEncoder,
        fusion: Fusion | None = None,
        sequence_model: SequenceModel | None = None,
        query_cache_size: int = QUERY_CACHE_SIZE,
    ):
        self._store = store
        self._encoder = encoder
        self.query_cache = QueryVectorCache(query_cache_size)
        self._query_batcher = QueryBatcher(encoder, cache=self.query_cache)
        # Exact dense scores of concurrent searches in one matrix product: the catalogue matrix
        # is read once per batch instead of once per query (10k x 384 here: 2.7 ms for one
        # query, 1.2 ms per query in fours, 0.8 in eights).
        self._score_batcher = MicroBatcher(self._score_queries, "retrieval.dense_scores", max_batch=32)
        self._fusion = fusion or Fusion()
        self._lexical = LexicalIndex()
        self._dense = DenseIndex(encoder.dimension)
        # Bumped by every change of the slots (upsert, delete, compaction): a search that left
        # the event loop knows whether what it computed still fits.
        self._generation = 0
        self._sequence_model = sequence_model
        # Item vectors of the sequence model, slot for slot with `_dense`; `_has_item_vector` is
        # False for products the model cannot place (new ones, when the text encoder differs).
        self._items = DenseIndex(sequence_model.dimension) if sequence_model else None
        self._has_item_vector = np.zeros(0, dtype=bool)
        self._slot_of: dict[str, int] = {}
        self._products: list[Product | None] = []
        self._filters = FilterColumns()  # slot for slot with `_dense`
        self._write_lock = asyncio.Lock()
        self._watermark = datetime.min.replace(tzinfo=timezone.utc) + SYNC_OVERLAP
        self._metrics = RetrievalMetrics()

    @property
    def model_version(self) -> str:
        return self._encoder.version

    @property
    def personal_model_version(self) -> str:
        return self._sequence_model.version if self._sequence_model else TEXT_HISTORY

    @property
    def size(self) -> int:
        return len(self._slot_of)

    async def load(self) -> None:
        """Builds the indexes from PostgreSQL, encoding only products without a cached vector."""
        self._watermark = await self._store.clock()
        products = await self._store.load_all()
        cached = await self._store.load_embeddings(self.model_version)
        vectors = np.zeros((len(products), self._encoder.dimension), dtype=np.float32)
        missing = []
        for row, product in enumerate(products):
            entry = cached.get(product.id)
            if entry is not None and entry[0] == product.content_hash():
                vectors[row] = entry[1]
            else:
                missing.append(row)
        if missing:
            log.info("encoding %d of %d products", len(missing), len(products))
            encoded = await self._encoder.encode(
                [products[row].embedding_text() for row in missing], kind="passage", timeout=BULK_ENCODE_TIMEOUT
            )
            vectors[missing] = encoded
            await self._store.save_embeddings([products[row] for row in missing], encoded, self.model_version)
        async with self._write_lock:
            self._apply_upsert(products, vectors)
            self._metrics.index_size(self.size)
        if not missing:
            # Nothing was encoded, so the encoder's model is not loaded yet: load it now, before
            # SERVING, not in the first search (it blocked the service for seconds there, long
            # enough for the gateway's health check to mark retrieval down).
            try:
                await self._encoder.encode(["warm-up"], kind="query")
            except (Unavailable, DeadlineExceeded) as error:  # searches degrade to BM25 until it is back
                log.warning("text encoder not warmed up: %s", error)
        log.info("catalogue index ready: %d products", self.size)

    def _apply_upsert(self, products: Sequence[Product], vectors: np.ndarray) -> None:
        self._generation += 1
        old_slots = [self._slot_of[p.id] for p in products if p.id in self._slot_of]
        if old_slots:
            self._remove_slots(np.array(old_slots))
        slots = self._dense.add(vectors)
        if self._items is not None:
            item_vectors, has_vector = self._sequence_model.item_vectors([p.id for p in products], vectors)
            self._items.add(item_vectors)
            self._has_item_vector = np.concatenate([self._has_item_vector, has_vector])
        for product, slot in zip(products, slots):
            self._slot_of[product.id] = int(slot)
        self._products.extend(products)
        self._filters.append(products)
        self._lexical.upsert(products)
        if self._dense.needs_compaction():
            self._compact()

    def _compact(self) -> None:
        mapping = self._dense.compact()
        live = np.flatnonzero(mapping >= 0)
        self._products = [self._products[slot] for slot in live]
        self._filters = FilterColumns(self._products)
        if self._items is not None:
            self._items.compact()  # same live slots as `_dense`, so the same mapping
            self._has_item_vector = self._has_item_vector[live]
        self._slot_of = {product_id: int(mapping[slot]) for product_id, slot in self._slot_of.items()}

    async def upsert(self, products: Sequence[Product]) -> tuple[int, int]:
        if not products:
            raise InvalidArgument("products", "must contain at least one product")
        if len(products) > MAX_UPSERT:
            raise InvalidArgument("products", f"must contain at most {MAX_UPSERT} products per call, got {len(products)}")
        seen: set[str] = set()
        for index, product in enumerate(products):
            validate_product(product, f"products[{index}]")
            if product.id in seen:
                raise InvalidArgument(f"products[{index}].id", f"duplicates an earlier product id {product.id!r}")
            seen.add(product.id)
        vectors, missing = self._indexed_vectors(products)
        if missing:
            with _tracer.start_as_current_span("retrieval.encode_products") as span:
                span.set_attribute("shelfwise.products.encoded", len(missing))
                span.set_attribute("shelfwise.products.reused", len(products) - len(missing))
                vectors[missing] = await self._encoder.encode(
                    [products[row].embedding_text() for row in missing], kind="passage", timeout=BULK_ENCODE_TIMEOUT
                )
        async with self._write_lock:
            inserted, updated = await self._store.upsert(products, vectors, self.model_version)
            self._apply_upsert(products, vectors)
            self._metrics.index_size(self.size)
        self._metrics.upserted(inserted, updated)
        return inserted, updated

    def _indexed_vectors(self, products: Sequence[Product]) -> tuple[np.ndarray, list[int]]:
        """The vectors of `products` whose embedding text the index already holds (a price or
        stock update, a full feed imported again: encoding is most of an import's cost), and the
        rows still to encode. The vector depends only on that text and the encoder version, so
        it stays right even if the product changes again before this upsert is applied."""
        vectors = np.zeros((len(products), self._encoder.dimension), dtype=np.float32)
        missing = []
        for row, product in enumerate(products):
            slot = self._slot_of.get(product.id)
            if slot is not None and self._products[slot].embedding_text() == product.embedding_text():
                vectors[row] = self._dense.vectors[slot]
            else:
                missing.append(row)
        return vectors, missing

    async def delete(self, product_ids: Sequence[str]) -> tuple[int, list[str]]:
        if not product_ids:
            raise InvalidArgument("product_ids", "must contain at least one id")
        if len(product_ids) > MAX_UPSERT:
            raise InvalidArgument("product_ids", f"must contain at most {MAX_UPSERT} ids per call")
        async with self._write_lock:
            deleted = await self._store.delete(product_ids)
            self._apply_delete(deleted)
            self._metrics.index_size(self.size)
        self._metrics.deleted(len(deleted))
        deleted_set = set(deleted)
        return len(deleted), [product_id for product_id in dict.fromkeys(product_ids) if product_id not in deleted_set]

    def _apply_delete(self, product_ids: Sequence[str]) -> None:
        self._generation += 1
        slots = [self._slot_of.pop(product_id) for product_id in product_ids if product_id in self._slot_of]
        if slots:
            self._remove_slots(np.array(slots))
        self._lexical.delete(list(product_ids))

    def _remove_slots(self, slots: np.ndarray) -> None:
        self._dense.remove(slots)
        if self._items is not None:
            self._items.remove(slots)
        for slot in slots.tolist():
            self._products[slot] = None

    async def sync(self) -> int:
        """Applies the catalogue writes other replicas made since the last sync (their upserts
        carry cached embeddings, so nothing is re-encoded); returns how many products changed."""
        # Read under the write lock: a local upsert or delete landing between the read and the
        # apply would otherwise be overwritten by the older state just read.
        async with self._write_lock:
            changed, deleted, latest = await self._store.changes_since(
                self._watermark - SYNC_OVERLAP, self.model_version
            )
            upserts, vectors, missing = [], [], []
            for product, content_hash, vector in changed:
                slot = self._slot_of.get(product.id)
                if slot is not None and self._products[slot] == product:
                    continue
                if vector is None or content_hash != product.content_hash():
                    missing.append(len(upserts))
                upserts.append(product)
                vectors.append(vector)
            if missing:
                encoded = await self._encoder.encode(
                    [upserts[i].embedding_text() for i in missing], kind="passage", timeout=BULK_ENCODE_TIMEOUT
                )
                for row, i in enumerate(missing):
                    vectors[i] = encoded[row]
            if upserts:
                self._apply_upsert(upserts, np.stack(vectors).astype(np.float32))
            still_there = {product.id for product, _, _ in changed}
            gone = [pid for pid in dict.fromkeys(deleted) if pid in self._slot_of and pid not in still_there]
            if gone:
                self._apply_delete(gone)
        if latest is not None:
            self._watermark = max(self._watermark, latest)
        return len(upserts) + len(gone)

    def get(self, product_ids: Sequence[str]) -> tuple[list[Product], list[str]]:
        found, missing = [], []
        for product_id in product_ids:
            slot = self._slot_of.get(product_id)
            (found.append(self._products[slot]) if slot is not None else missing.append(product_id))
        return found, missing

    def _allowed(self, filters: CandidateFilters, exclude: Sequence[str] = ()) -> np.ndarray:
        allowed = self._dense.alive.copy()
        excluded = [self._slot_of[p] for p in exclude if p in self._slot_of]
        if excluded:
            allowed[excluded] = False
        return self._filters.narrow(allowed, filters)

    async def retrieve(
        self,
        query_text: str,
        filters: CandidateFilters,
        limit: int,
        history: Sequence[str] = (),
        exclude: Sequence[str] = (),
        mode: str = HYBRID,
        dense_wait: float | None = None,
        translation: str = "",
    ) -> RetrievalResult:
        """Text query: BM25 and dense lists, fused by weighted reciprocal rank (`services.retrieval.fusion`). If the text encoder is
        unreachable, or the query vector is not ready within `dense_wait` seconds (overload),
        the answer is lexical only, and says so (`degraded`). With a history, every candidate
        also gets its personal score. `mode` (experiments) keeps one list only: LEXICAL never
        encodes the query (dense_score 0), DENSE skips BM25. `translation` (an English
        rendering of a Chinese query) joins the query in the dense search: their vectors are
        averaged."""
        if mode not in RETRIEVAL_MODES:
            raise InvalidArgument("mode", f"must be one of {', '.join(RETRIEVAL_MODES)}, got {mode!r}")
        shopper = await self._shopper(history)
        result = await self._retrieve_text(query_text, filters, limit, mode, dense_wait, translation)
        return self._personalised(result, shopper, exclude)

    async def _retrieve_text(
        self, query_text: str, filters: CandidateFilters, limit: int, mode: str = HYBRID,
        dense_wait: float | None = None, translation: str = "",
    ) -> RetrievalResult:
        query_vector = None
        if mode != LEXICAL:
            try:
                # A query that gives up here is left out of its encoding batch (MicroBatcher),
                # so shedding also takes load off the encoder.
                query_vector = await asyncio.wait_for(self._query_vector(query_text, translation), dense_wait)
            except TimeoutError:
                self._metrics.dense_skipped("overload")
                log.debug("dense retrieval skipped: no query vector within %.3fs", dense_wait)
            except (Unavailable, DeadlineExceeded) as error:
                self._metrics.dense_skipped("encoder_unavailable")
                log.warning("dense retrieval skipped: %s", error)
        all_scores = None
        if query_vector is not None and self._dense.slots <= self._dense.exact_threshold:
            # The exact search's matrix product is most of a search's CPU on the event loop
            # (profiled under `shelfwise bench search`: the loop was the bottleneck); numpy
            # releases the GIL, so it runs in a worker while the loop serves other requests.
            # Slots computed over a catalogue that changed meanwhile are not used.
            generation = self._generation
            all_scores = await self._score_batcher.submit(query_vector)
            if generation != self._generation:
                all_scores = None
        # Only now, with no await left before the answer: a catalogue sync or delete landing
        # while the query was being encoded would otherwise leave deleted slots allowed.
        allowed = self._allowed(filters)
        lexical, ceiling = [], 0.0
        if mode != DENSE or query_vector is None:  # dense-only with no encoder: BM25 rather than nothing
            with _tracer.start_as_current_span("retrieval.lexical"):
                lexical, ceiling = self._lexical.search(
                    query_text, limit, filters.categories, filters.brands, filters.price_min, filters.price_max,
                    dict(filters.attributes),
                )
        if mode == LEXICAL:
            no_slots = np.zeros(0, dtype=np.int64)
            candidates = self._fuse(None, lexical, no_slots, np.zeros(0, dtype=np.float32), limit, ceiling)
            return RetrievalResult(candidates, np.count_nonzero(allowed))
        if query_vector is None:
            no_slots = np.zeros(0, dtype=np.int64)
            candidates = self._fuse(None, lexical, no_slots, np.zeros(0, dtype=np.float32), limit, ceiling)
            return RetrievalResult(candidates, np.count_nonzero(allowed), degraded=("dense",))
        with _tracer.start_as_current_span("retrieval.dense"):
            dense_slots, dense_scores = self._dense.search(query_vector, limit, allowed, all_scores)
        candidates = self._fuse(query_vector, lexical, dense_slots, dense_scores, limit, ceiling)
        return RetrievalResult(candidates, np.count_nonzero(allowed))

    async def _score_queries(self, query_vectors: list[np.ndarray]) -> list[np.ndarray]:
        """Every slot's inner product with each query, computed in a worker thread (numpy
        releases the GIL, so the event loop serves other requests meanwhile)."""
        scores = await asyncio.to_thread(self._dense.all_scores, np.stack(query_vectors))
        return list(scores)

    async def _query_vector(self, query_text: str, translation: str = "") -> np.ndarray:
        """The query's vector; with a translation, the normalised mean of both texts' vectors
        (Instacart dev split, Chinese queries: NDCG@10 0.429 for the query alone, 0.450 for its
        dictionary translation alone, 0.476 for the mean). Each text is cached on its own."""
        texts = [query_text] if not translation or translation == query_text else [query_text, translation]
        vectors = await asyncio.gather(*(self._text_vector(text) for text in texts))
        if len(vectors) == 1:
            return vectors[0]
        mean = vectors[0] + vectors[1]
        return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32, copy=False)

    async def _text_vector(self, text: str) -> np.ndarray:
        vector = self.query_cache.get(text)
        if vector is None:
            vector = await self._query_batcher.encode(text)  # cached by the batcher
        return vector

    async def similar(
        self,
        product_id: str,
        filters: CandidateFilters,
        limit: int,
        history: Sequence[str] = (),
        exclude: Sequence[str] = (),
    ) -> RetrievalResult:
        slot = self._slot_of.get(product_id)
        if slot is None:
            raise NotFound(f"similar_to_product_id: no product with id {product_id!r}")
        shopper = await self._shopper(history)
        allowed = self._allowed(filters, exclude)
        allowed[slot] = False
        vector = self._dense.vectors[slot]
        dense_slots, dense_scores = self._dense.search(vector, limit, allowed)
        result = RetrievalResult(self._fuse(vector, [], dense_slots, dense_scores, limit), np.count_nonzero(allowed))
        return self._personalised(result, shopper, exclude)

    def browse(
        self, filters: CandidateFilters, limit: int, exclude: Sequence[str] = (), preferred: Sequence[str] = ()
    ) -> RetrievalResult:
        """No text: the products matching the filters, `preferred` ones first in their order
        (e.g. the most popular), then the others (ranking orders them)."""
        allowed = self._allowed(filters, exclude)
        first = [self._slot_of[p] for p in dict.fromkeys(preferred) if p in self._slot_of]
        first = [slot for slot in first if allowed[slot]][:limit]
        rest = allowed.copy()
        rest[first] = False
        slots = first + np.flatnonzero(rest)[: limit - len(first)].tolist()
        candidates = [Candidate(self._products[slot], 0.0, 0.0, 0.0, 0, 0) for slot in slots]
        return RetrievalResult(candidates, np.count_nonzero(allowed))

    async def personal(
        self, history: Sequence[str], filters: CandidateFilters, limit: int, exclude: Sequence[str] = ()
    ) -> RetrievalResult:
        """"For this user": the products the shopper most likely wants next, never the history
        itself (as the sequence model is trained and evaluated) nor `exclude`. No known product
        in the history: no candidates (the caller falls back to popular products)."""
        shopper = await self._shopper(history)
        if shopper is None:
            return RetrievalResult([], 0, personal_model_version=self.personal_model_version)
        allowed = self._allowed(filters, exclude)
        allowed[shopper.history_slots] = False
        if self._items is not None:
            allowed &= self._has_item_vector
            slots, _ = self._items.search(shopper.vector, limit, allowed)
        else:
            # Each interest's nearest products, then the mixture decides among them all.
            slots = self._dense.search_many(shopper.interests, limit, allowed)
        logits = self._personal_logits(shopper, slots)
        order = np.argsort(-logits, kind="stable")[:limit]
        slots, logits = slots[order], logits[order]
        personal = relative_probability(logits, np.isfinite(logits))
        candidates = [
            Candidate(self._products[slot], 0.0, 0.0, self._fusion.scaled(0, rank), 0, 0,
                      personal_score=float(score), personal_rank=rank)
            for rank, (slot, score) in enumerate(zip(slots.tolist(), personal.tolist()), start=1)
        ]
        return RetrievalResult(candidates, np.count_nonzero(allowed), personal_model_version=shopper.model_version)

    async def _shopper(self, history: Sequence[str]) -> Shopper | None:
        """The shopper of a history (unknown ids skipped), or None when nothing is known."""
        if len(history) > MAX_HISTORY:
            raise InvalidArgument("history_product_ids", f"must list at most {MAX_HISTORY} products, got {len(history)}")
        slots = np.array([self._slot_of[p] for p in history if p in self._slot_of], dtype=np.int64)
        if self._items is not None:
            slots = slots[self._has_item_vector[slots]] if len(slots) else slots
            if len(slots) == 0:
                return None
            inputs = self._sequence_model.history_vectors(
                [self._products[slot].id for slot in slots.tolist()], self._items.vectors[slots]
            )
            vector = await self._sequence_model.user_vector(inputs)
            return Shopper(slots, self._sequence_model.version, vector=vector)
        if len(slots) == 0:
            return None
        interests, log_weights = text_history_interests(self._dense.vectors[slots])
        return Shopper(slots, TEXT_HISTORY, interests=interests, interest_log_weights=log_weights)

    def _personal_logits(self, shopper: Shopper, slots: np.ndarray) -> np.ndarray:
        """The shopper's log-probability (up to a constant) of each product: the sequence
        model's logit, or the text-history mixture's. -inf for a product without a vector."""
        if self._items is None:
            return text_history_logits(shopper.interests, shopper.interest_log_weights, self._dense.vectors[slots])
        logits = self._items.vectors[slots] @ shopper.vector if len(slots) else np.zeros(0, dtype=np.float32)
        return np.where(self._has_item_vector[slots], logits, -np.inf).astype(np.float32)

    def _personal_scores(self, shopper: Shopper, slots: np.ndarray) -> np.ndarray:
        """The shopper's affinity for these products, in [0, 1]: the probability of each product
        relative to the most likely one among them, exp(logit - best logit), so the model's
        order is kept (cosine would not keep the sequence model's: item vector norms carry part
        of what it learned). 0 for a product without a vector."""
        logits = self._personal_logits(shopper, slots)
        return relative_probability(logits, np.isfinite(logits))

    def _personalised(self, result: RetrievalResult, shopper: Shopper | None, exclude: Sequence[str]) -> RetrievalResult:
        """Drops excluded products; adds personal scores when there is a shopper vector."""
        excluded = set(exclude)
        candidates = [c for c in result.candidates if c.product.id not in excluded]
        if shopper is None:
            return RetrievalResult(candidates, result.total_matching, result.degraded)
        slots = np.array([self._slot_of[c.product.id] for c in candidates], dtype=np.int64)
        scores = self._personal_scores(shopper, slots)
        candidates = [replace(c, personal_score=float(score)) for c, score in zip(candidates, scores.tolist())]
        return RetrievalResult(candidates, result.total_matching, result.degraded, shopper.model_version)

    def _fuse(self, query_vector, lexical, dense_slots, dense_scores, limit, ceiling: float = 0.0) -> list[Candidate]:
        lexical_rank = {product_id: rank for rank, (product_id, _) in enumerate(lexical, start=1)}
        lexical_score = dict(lexical)
        dense_rank = {self._products[s].id: rank for rank, s in enumerate(dense_slots.tolist(), start=1)}
        ids = list(dict.fromkeys([pid for pid, _ in lexical] + list(dense_rank)))
        if not ids:
            return []
        slots = np.array([self._slot_of[pid] for pid in ids])
        cosine = self._dense.similarity(query_vector, slots) if query_vector is not None else np.zeros(len(ids))
        lexical_ranks = np.array([lexical_rank.get(pid, 0) for pid in ids], dtype=np.int64)
        dense_ranks = np.array([dense_rank.get(pid, 0) for pid in ids], dtype=np.int64)
        fused = self._fusion.scaled_ranks(lexical_ranks, dense_ranks)
        # Best fused score first, then best cosine; lexsort is stable, so full ties keep the
        # lists' order. Computed over arrays: a Python loop over both lists (up to twice
        # `limit` products) was a visible part of retrieval's CPU under load.
        kept = np.lexsort((-cosine.astype(np.float64), -fused))[:limit]
        # Candidates (frozen dataclasses, slow to build) only for the products that are kept.
        candidates = []
        for row in kept.tolist():
            product_id = ids[row]
            bm25 = lexical_score.get(product_id, 0.0)
            coverage = bm25 / ceiling if ceiling > 0 else 0.0
            candidates.append(Candidate(
                self._products[int(slots[row])], bm25, float(cosine[row]), float(fused[row]),
                int(lexical_ranks[row]), int(dense_ranks[row]), coverage,
            ))
        return candidates
