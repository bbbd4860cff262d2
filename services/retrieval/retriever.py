"""The retrieval domain: keeps the lexical and dense indexes and the product table in step,
and answers candidate queries by fusing the lists (reciprocal rank fusion) under filters.

Dense retrieval is routed by language (DESIGN §1). Every product has a vector in an English
space and, unless it is switched off, in a multilingual one (`services.retrieval.vector_space`,
slot for slot). A search sends each space the text it reads best: the English space gets the
English rendering of a Chinese query (query understanding's `translated_text`) or else the
query itself, the multilingual space gets the query as the shopper typed it, and BM25 reads
both the query and its rendering (`lexical_text`). BM25 and the two
dense lists are fused by weighted reciprocal rank, and each candidate carries its score and rank
in every list, which ranking reads as features. Without a multilingual space (a catalogue that
is not English, say, served by a multilingual primary encoder), the one space reads the query
and its rendering, their vectors averaged.

Personal retrieval (`services.retrieval.personal`): when a sequence model is deployed, every
product also has an item vector in a third index kept in step with the others (same slots);
a shopper's history becomes a shopper vector, whose nearest items are the "for this user"
candidates. Without one, the history's recent text embeddings (in the multilingual space, which
places products of every language; similar items read it too) are the shopper's interests and
each interest's nearest products are the candidates. Either way
`personal_score` is the product's probability relative to the best candidate.

Filters are hard: every candidate matches every filter that is set. Upserts and deletes change
the indexes in place (no rebuild); PostgreSQL stays the system of record and the indexes are
rebuilt from it at start-up.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Sequence

import numpy as np

from services.common.errors import DeadlineExceeded, InvalidArgument, NotFound, Unavailable
from services.common.text_encoder import TextEncoder
from services.common.tracing import tracer
from services.retrieval.catalog import Product, validate_product
from services.retrieval.dense import DenseIndex
from services.retrieval.filters import CandidateFilters, FilterColumns
from services.retrieval.fusion import Fusion
from services.retrieval.lexical import LexicalIndex
from services.retrieval.metrics import RetrievalMetrics
from services.retrieval.personal import (
    MAX_HISTORY,
    TEXT_HISTORY,
    SequenceModel,
    relative_probability,
    text_history_interests,
    text_history_logits,
)
from services.retrieval.store import ProductStore
from services.retrieval.vector_space import QUERY_CACHE_SIZE, QueryBatcher, QueryVectorCache, VectorSpace

__all__ = ["CandidateFilters", "CatalogIndex", "Candidate", "QueryBatcher", "QueryVectorCache", "RetrievalResult"]

log = logging.getLogger(__name__)
_tracer = tracer(__name__)

MAX_LIMIT = 2_000
MAX_UPSERT = 1_000
# Per batch of 64 texts when encoding products; query encoding keeps the backend's short default.
BULK_ENCODE_TIMEOUT = 120.0
# Change times come from writers' transactions, which may commit a little after they are
# stamped: each sync looks this far behind its watermark (unchanged products are skipped).
SYNC_OVERLAP = timedelta(seconds=30)
# Which lists a text query draws from (RetrieveRequest.mode): all fused (the default), or one kind.
HYBRID, LEXICAL, DENSE = "hybrid", "lexical", "dense"
RETRIEVAL_MODES = (HYBRID, LEXICAL, DENSE)
# Degraded components: the English (primary) space's query vector missing, the multilingual one's.
DEGRADED_DENSE, DEGRADED_MULTILINGUAL = "dense", "dense.multilingual"
_NO_SLOTS = np.zeros(0, dtype=np.int64)
_NO_SCORES = np.zeros(0, dtype=np.float32)


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
    # The multilingual space's cosine and 1-based rank (0: not in its list, or no such space).
    multilingual_score: float = 0.0
    multilingual_rank: int = 0


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
    """The catalogue's lexical index and vector spaces. Products are embedded as passages and
    search text as a query: each encoder adds whatever its model expects for each ("passage: " /
    "query: " for e5). `encoder` makes the English (primary) space; `multilingual_encoder`, when
    given and different, the multilingual one."""

    def __init__(
        self,
        store: ProductStore,
        encoder: TextEncoder,
        fusion: Fusion | None = None,
        sequence_model: SequenceModel | None = None,
        query_cache_size: int = QUERY_CACHE_SIZE,
        multilingual_encoder: TextEncoder | None = None,
    ):
        self._store = store
        self._english = VectorSpace(encoder, query_cache_size)
        self._multilingual = (
            VectorSpace(multilingual_encoder, query_cache_size)
            if multilingual_encoder is not None and multilingual_encoder.version != encoder.version
            else None
        )
        self._spaces = [space for space in (self._english, self._multilingual) if space is not None]
        self._fusion = fusion or Fusion()
        self._lexical = LexicalIndex()
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
    def _dense(self) -> DenseIndex:
        """The English (primary) space's vectors."""
        return self._english.index

    @property
    def _content(self) -> VectorSpace:
        """The space similar items and personal retrieval read: the multilingual one when there
        is one, since it places every product whatever the language of its text (the English
        space cannot read the demo catalogue's Chinese titles: their nearest neighbours there
        were whatever else was written in Chinese), else the English one."""
        return self._multilingual or self._english

    @property
    def content_encoder_version(self) -> str:
        """The encoder version of the content space (a sequence model's text side reads it)."""
        return self._content.version

    @property
    def query_cache(self) -> QueryVectorCache:
        return self._english.query_cache

    @property
    def model_version(self) -> str:
        """The encoder versions behind the dense lists, English first ("a" or "a+b")."""
        return "+".join(space.version for space in self._spaces)

    @property
    def encoder_versions(self) -> tuple[str, ...]:
        return tuple(space.version for space in self._spaces)

    @property
    def personal_model_version(self) -> str:
        return self._sequence_model.version if self._sequence_model else TEXT_HISTORY

    @property
    def size(self) -> int:
        return len(self._slot_of)

    async def load(self) -> None:
        """Builds the indexes from PostgreSQL, encoding only products without a cached vector
        (per space: a new encoder version encodes the catalogue once, then it is cached)."""
        self._watermark = await self._store.clock()
        products = await self._store.load_all()
        vectors = []
        encoded_any = False
        for space in self._spaces:
            cached = await self._store.load_embeddings(space.version)
            matrix = np.zeros((len(products), space.index.dimension), dtype=np.float32)
            missing = []
            for row, product in enumerate(products):
                entry = cached.get(product.id)
                if entry is not None and entry[0] == product.content_hash():
                    matrix[row] = entry[1]
                else:
                    missing.append(row)
            if missing:
                log.info("encoding %d of %d products with %s", len(missing), len(products), space.version)
                encoded = await space.encode_products(
                    [products[row].embedding_text() for row in missing], timeout=BULK_ENCODE_TIMEOUT
                )
                matrix[missing] = encoded
                await self._store.save_embeddings([products[row] for row in missing], encoded, space.version)
                encoded_any = True
            vectors.append(matrix)
        async with self._write_lock:
            self._apply_upsert(products, *vectors)
            self._metrics.index_size(self.size)
        if not encoded_any:
            # Nothing was encoded, so the encoders' models are not loaded yet: load them now,
            # before SERVING, not in the first search (it blocked the service for seconds there,
            # long enough for the gateway's health check to mark retrieval down).
            for space in self._spaces:
                try:
                    await space.encoder.encode(["warm-up"], kind="query")
                except (Unavailable, DeadlineExceeded) as error:  # searches degrade until it is back
                    log.warning("text encoder %s not warmed up: %s", space.version, error)
        log.info("catalogue index ready: %d products", self.size)

    def _apply_upsert(
        self, products: Sequence[Product], vectors: np.ndarray, multilingual_vectors: np.ndarray | None = None
    ) -> None:
        """Adds (or replaces) products with their English-space vectors and, when there is a
        multilingual space, its vectors."""
        if (multilingual_vectors is None) != (self._multilingual is None):
            raise ValueError("multilingual vectors are given exactly when there is a multilingual space")
        self._generation += 1
        old_slots = [self._slot_of[p.id] for p in products if p.id in self._slot_of]
        if old_slots:
            self._remove_slots(np.array(old_slots))
        slots = self._english.index.add(vectors)
        if self._multilingual is not None:
            self._multilingual.index.add(multilingual_vectors)
        if self._items is not None:
            content = vectors if self._multilingual is None else multilingual_vectors
            item_vectors, has_vector = self._sequence_model.item_vectors([p.id for p in products], content)
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
        if self._multilingual is not None:
            self._multilingual.index.compact()  # same live slots as the English space
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
                texts = [products[row].embedding_text() for row in missing]
                for space, matrix in zip(self._spaces, vectors):
                    matrix[missing] = await space.encode_products(texts, timeout=BULK_ENCODE_TIMEOUT)
        async with self._write_lock:
            inserted, updated = await self._store.upsert(products, dict(zip(self.encoder_versions, vectors)))
            self._apply_upsert(products, *vectors)
            self._metrics.index_size(self.size)
        self._metrics.upserted(inserted, updated)
        return inserted, updated

    def _indexed_vectors(self, products: Sequence[Product]) -> tuple[list[np.ndarray], list[int]]:
        """Each space's vectors of `products` whose embedding text the index already holds (a
        price or stock update, a full feed imported again: encoding is most of an import's
        cost), and the rows still to encode. A vector depends only on that text and the encoder
        version, so it stays right even if the product changes again before this upsert is
        applied."""
        vectors = [np.zeros((len(products), space.index.dimension), dtype=np.float32) for space in self._spaces]
        missing = []
        for row, product in enumerate(products):
            slot = self._slot_of.get(product.id)
            if slot is not None and self._products[slot].embedding_text() == product.embedding_text():
                for space, matrix in zip(self._spaces, vectors):
                    matrix[row] = space.index.vectors[slot]
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
        for space in self._spaces:
            space.index.remove(slots)
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
                self._watermark - SYNC_OVERLAP, self.encoder_versions
            )
            upserts, cached = [], []
            for product, embeddings in changed:
                slot = self._slot_of.get(product.id)
                if slot is not None and self._products[slot] == product:
                    continue
                upserts.append(product)
                cached.append(embeddings)
            vectors = []
            for space in self._spaces:
                rows, missing = [], []
                for i, (product, embeddings) in enumerate(zip(upserts, cached)):
                    content_hash, vector = embeddings.get(space.version, (None, None))
                    if vector is None or content_hash != product.content_hash():
                        missing.append(i)
                    rows.append(vector)
                if missing:
                    encoded = await space.encode_products(
                        [upserts[i].embedding_text() for i in missing], timeout=BULK_ENCODE_TIMEOUT
                    )
                    for row, i in enumerate(missing):
                        rows[i] = encoded[row]
                if upserts:
                    vectors.append(np.stack(rows).astype(np.float32))
            if upserts:
                self._apply_upsert(upserts, *vectors)
            still_there = {product.id for product, _ in changed}
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
        """Text query: BM25 and the dense lists (routed, see the module docstring), fused by
        weighted reciprocal rank (`services.retrieval.fusion`). If a text encoder is unreachable,
        or a query vector is not ready within `dense_wait` seconds (overload), its list is left
        out and the answer says so (`degraded`). With a history, every candidate also gets its
        personal score. `mode` (experiments) keeps one kind of list: LEXICAL never encodes the
        query (dense scores 0), DENSE skips BM25. `translation`: the English rendering of a
        Chinese query (query understanding), what the English space reads."""
        if mode not in RETRIEVAL_MODES:
            raise InvalidArgument("mode", f"must be one of {', '.join(RETRIEVAL_MODES)}, got {mode!r}")
        shopper = await self._shopper(history)
        result = await self._retrieve_text(query_text, filters, limit, mode, dense_wait, translation)
        return self._personalised(result, shopper, exclude)

    def routed_texts(self, query_text: str, translation: str = "") -> list[list[str]]:
        """The texts each space embeds for a query (their vectors averaged), English space first:
        the rendering, when there is one, for the English space and the query itself for the
        multilingual one; with a single space, both."""
        translation = translation if translation and translation != query_text else ""
        if self._multilingual is None:
            return [[query_text, translation] if translation else [query_text]]
        return [[translation or query_text], [query_text]]

    async def _query_vectors(
        self, query_text: str, translation: str, dense_wait: float | None
    ) -> tuple[list[np.ndarray | None], tuple[str, ...]]:
        """Each space's query vector (None where it is unavailable or late), and what degraded."""
        texts = self.routed_texts(query_text, translation)

        async def vector(space: VectorSpace, space_texts: list[str]) -> np.ndarray | None:
            try:
                # A query that gives up here is left out of its encoding batch (MicroBatcher),
                # so shedding also takes load off the encoder.
                return await asyncio.wait_for(space.mean_vector(space_texts), dense_wait)
            except TimeoutError:
                self._metrics.dense_skipped("overload")
                log.debug("dense retrieval in %s skipped: no query vector within %.3fs", space.version, dense_wait)
            except (Unavailable, DeadlineExceeded) as error:
                self._metrics.dense_skipped("encoder_unavailable")
                log.warning("dense retrieval in %s skipped: %s", space.version, error)
            return None

        vectors = list(await asyncio.gather(*(vector(s, t) for s, t in zip(self._spaces, texts))))
        degraded = tuple(
            name for name, v in zip((DEGRADED_DENSE, DEGRADED_MULTILINGUAL), vectors) if v is None
        )
        return vectors, degraded

    async def _retrieve_text(
        self, query_text: str, filters: CandidateFilters, limit: int, mode: str = HYBRID,
        dense_wait: float | None = None, translation: str = "",
    ) -> RetrievalResult:
        vectors: list[np.ndarray | None] = [None] * len(self._spaces)
        degraded: tuple[str, ...] = ()
        if mode != LEXICAL:
            vectors, degraded = await self._query_vectors(query_text, translation, dense_wait)
        # Exact scores of small catalogues: the matrix product is most of a search's CPU on the
        # event loop (profiled under `shelfwise bench search`), so it runs in a worker while
        # the loop serves other requests. Slots computed over a catalogue that changed
        # meanwhile are not used.
        generation = self._generation
        all_scores = await asyncio.gather(*(
            space.scores_for(v) if v is not None and space.exact() else _none()
            for space, v in zip(self._spaces, vectors)
        ))
        if generation != self._generation:
            all_scores = [None] * len(self._spaces)
        # Only now, with no await left before the answer: a catalogue sync or delete landing
        # while the query was being encoded would otherwise leave deleted slots allowed.
        allowed = self._allowed(filters)
        lexical, ceiling = [], 0.0
        no_vector = all(v is None for v in vectors)
        if mode != DENSE or no_vector:  # dense-only with no encoder: BM25 rather than nothing
            with _tracer.start_as_current_span("retrieval.lexical"):
                lexical, ceiling = self._lexical.search(
                    lexical_text(query_text, translation), limit, filters.categories, filters.brands,
                    filters.price_min, filters.price_max, dict(filters.attributes),
                )
        if mode == LEXICAL:
            return RetrievalResult(self._fuse(lexical, [], limit, ceiling), np.count_nonzero(allowed))
        dense_lists = []
        with _tracer.start_as_current_span("retrieval.dense"):
            for space, vector, scores in zip(self._spaces, vectors, all_scores):
                if vector is None:
                    dense_lists.append((vector, _NO_SLOTS, _NO_SCORES))
                else:
                    dense_lists.append((vector, *space.index.search(vector, limit, allowed, scores)))
        candidates = self._fuse(lexical, dense_lists, limit, ceiling)
        return RetrievalResult(candidates, np.count_nonzero(allowed), degraded=degraded)

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
        content = self._content.index
        vector = content.vectors[slot]
        slots, scores = content.search(vector, limit, allowed)
        lists = [(vector, slots, scores)] if self._multilingual is None else [(None, _NO_SLOTS, _NO_SCORES), (vector, slots, scores)]
        result = RetrievalResult(self._fuse([], lists, limit), np.count_nonzero(allowed))
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
            slots = self._content.index.search_many(shopper.interests, limit, allowed)
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
        interests, log_weights = text_history_interests(self._content.index.vectors[slots])
        return Shopper(slots, TEXT_HISTORY, interests=interests, interest_log_weights=log_weights)

    def _personal_logits(self, shopper: Shopper, slots: np.ndarray) -> np.ndarray:
        """The shopper's log-probability (up to a constant) of each product: the sequence
        model's logit, or the text-history mixture's. -inf for a product without a vector."""
        if self._items is None:
            return text_history_logits(shopper.interests, shopper.interest_log_weights, self._content.index.vectors[slots])
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

    def _fuse(self, lexical, dense_lists, limit: int, ceiling: float = 0.0) -> list[Candidate]:
        """Candidates from the BM25 list and the dense lists ((query vector, slots, scores) per
        space, English first; a space without a query vector has None and empty lists), best
        fused score first, then best English rank. Every kept candidate gets its cosine in every
        space whose query vector exists, in or out of that space's list, so ranking compares
        like with like. Computed over slot arrays: Python loops and dicts over the lists (up to
        three times `limit` products) were most of retrieval's own CPU under load (`shelfwise
        bench search --profile`), and cosines are computed for the kept candidates only."""
        lexical_slots = np.fromiter((self._slot_of[pid] for pid, _ in lexical), dtype=np.int64, count=len(lexical))
        lists = [lexical_slots, *(slots for _, slots, _ in dense_lists)]
        everything = np.concatenate(lists)
        if len(everything) == 0:
            return []
        _, first = np.unique(everything, return_index=True)
        slots = everything[np.sort(first)]  # the union, in the lists' order
        by_slot = np.argsort(slots)
        ordered = slots[by_slot]

        def rows_of(list_slots: np.ndarray) -> np.ndarray:
            return by_slot[np.searchsorted(ordered, list_slots)]

        def ranks_of(list_slots: np.ndarray) -> np.ndarray:
            ranks = np.zeros(len(slots), dtype=np.int64)
            ranks[rows_of(list_slots)] = np.arange(1, len(list_slots) + 1)
            return ranks

        lexical_ranks = ranks_of(lexical_slots)
        bm25 = np.zeros(len(slots))
        bm25[rows_of(lexical_slots)] = [score for _, score in lexical]
        ranks = [ranks_of(list_slots) for _, list_slots, _ in dense_lists]
        while len(ranks) < 2:  # no multilingual space (or no dense list at all)
            ranks.append(np.zeros(len(slots), dtype=np.int64))
        fused = self._fusion.scaled_ranks(lexical_ranks, ranks[0], ranks[1] if self._multilingual else None)
        # lexsort is stable, so full ties keep the lists' order.
        english = np.where(ranks[0] > 0, ranks[0], np.iinfo(np.int64).max)
        kept = np.lexsort((english, -fused))[:limit]
        cosines = [
            space.index.similarity(vector, slots[kept]) if vector is not None else np.zeros(len(kept))
            for (vector, _, _), space in zip(dense_lists, self._spaces)
        ]
        while len(cosines) < 2:
            cosines.append(np.zeros(len(kept)))
        coverage = bm25[kept] / ceiling if ceiling > 0 else np.zeros(len(kept))
        # Candidates (frozen dataclasses, slow to build) only for the products that are kept.
        return [
            Candidate(
                self._products[slot], lexical_score, english_cosine, fused_score, lexical_rank, english_rank,
                covered, multilingual_score=multilingual_cosine, multilingual_rank=multilingual_rank,
            )
            for slot, lexical_score, english_cosine, fused_score, lexical_rank, english_rank, covered,
            multilingual_cosine, multilingual_rank in zip(
                slots[kept].tolist(), bm25[kept].tolist(), cosines[0].tolist(), fused[kept].tolist(),
                lexical_ranks[kept].tolist(), ranks[0][kept].tolist(), coverage.tolist(), cosines[1].tolist(),
                ranks[1][kept].tolist(),
            )
        ]


def lexical_text(query_text: str, translation: str = "") -> str:
    """What BM25 reads: the query and its English rendering, when there is one. Chinese words
    match Chinese titles, the rendering's English words match English ones (Instacart, 5-fold
    cross-validation over the train and dev splits, Chinese NDCG@10 of the full ranking 0.492
    with the query alone, 0.505 with both, 0.511 with the rendering alone)."""
    return f"{query_text} {translation}" if translation and translation != query_text else query_text


async def _none() -> None:
    return None
