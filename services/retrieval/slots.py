"""The catalogue's slot table: every index of the catalogue kept in step, slot for slot.

A product has one slot, the same row in each vector space (English, and multilingual when there
is one), in the sequence model's item vectors and in the filter columns; the lexical index and
`slot_of` find it by id. Upserts and deletes change every index in place (a replaced product
gets a new slot, the old one is removed), and once enough slots are dead the table compacts.
Every change bumps `generation`, so a search that left the event loop knows whether what it
computed over slots still fits.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from services.retrieval.catalog import Product
from services.retrieval.dense import DenseIndex
from services.retrieval.filters import CandidateFilters, FilterColumns
from services.retrieval.lexical import LexicalIndex
from services.retrieval.personal import SequenceModel
from services.retrieval.vector_space import VectorSpace


class CatalogSlots:
    def __init__(self, english: VectorSpace, multilingual: VectorSpace | None, sequence_model: SequenceModel | None):
        self.english = english
        self.multilingual = multilingual
        self.spaces = [space for space in (english, multilingual) if space is not None]
        self.lexical = LexicalIndex()
        self.generation = 0
        self.sequence_model = sequence_model
        # Item vectors of the sequence model, slot for slot with `dense`; `has_item_vector` is
        # False for products the model cannot place (new ones, when the text encoder differs).
        self.items = DenseIndex(sequence_model.dimension) if sequence_model else None
        self.has_item_vector = np.zeros(0, dtype=bool)
        self.slot_of: dict[str, int] = {}
        self.products: list[Product | None] = []
        self.filters = FilterColumns()  # slot for slot with `dense`

    @property
    def dense(self) -> DenseIndex:
        """The English (primary) space's vectors."""
        return self.english.index

    @property
    def content(self) -> VectorSpace:
        """The space similar items and personal retrieval read: the multilingual one when there
        is one, since it places every product whatever the language of its text (the English
        space cannot read the demo catalogue's Chinese titles: their nearest neighbours there
        were whatever else was written in Chinese), else the English one."""
        return self.multilingual or self.english

    @property
    def encoder_versions(self) -> tuple[str, ...]:
        return tuple(space.version for space in self.spaces)

    @property
    def size(self) -> int:
        return len(self.slot_of)

    def apply_upsert(
        self, products: Sequence[Product], vectors: np.ndarray, multilingual_vectors: np.ndarray | None = None
    ) -> None:
        """Adds (or replaces) products with their English-space vectors and, when there is a
        multilingual space, its vectors."""
        if (multilingual_vectors is None) != (self.multilingual is None):
            raise ValueError("multilingual vectors are given exactly when there is a multilingual space")
        self.generation += 1
        old_slots = [self.slot_of[p.id] for p in products if p.id in self.slot_of]
        if old_slots:
            self._remove_slots(np.array(old_slots))
        slots = self.english.index.add(vectors)
        if self.multilingual is not None:
            self.multilingual.index.add(multilingual_vectors)
        if self.items is not None:
            content = vectors if self.multilingual is None else multilingual_vectors
            item_vectors, has_vector = self.sequence_model.item_vectors([p.id for p in products], content)
            self.items.add(item_vectors)
            self.has_item_vector = np.concatenate([self.has_item_vector, has_vector])
        for product, slot in zip(products, slots):
            self.slot_of[product.id] = int(slot)
        self.products.extend(products)
        self.filters.append(products)
        self.lexical.upsert(products)
        if self.dense.needs_compaction():
            self._compact()

    def _compact(self) -> None:
        mapping = self.dense.compact()
        if self.multilingual is not None:
            self.multilingual.index.compact()  # same live slots as the English space
        live = np.flatnonzero(mapping >= 0)
        self.products = [self.products[slot] for slot in live]
        self.filters = FilterColumns(self.products)
        if self.items is not None:
            self.items.compact()  # same live slots as `dense`, so the same mapping
            self.has_item_vector = self.has_item_vector[live]
        self.slot_of = {product_id: int(mapping[slot]) for product_id, slot in self.slot_of.items()}

    def apply_delete(self, product_ids: Sequence[str]) -> None:
        self.generation += 1
        slots = [self.slot_of.pop(product_id) for product_id in product_ids if product_id in self.slot_of]
        if slots:
            self._remove_slots(np.array(slots))
        self.lexical.delete(list(product_ids))

    def _remove_slots(self, slots: np.ndarray) -> None:
        for space in self.spaces:
            space.index.remove(slots)
        if self.items is not None:
            self.items.remove(slots)
        for slot in slots.tolist():
            self.products[slot] = None

    def indexed_vectors(self, products: Sequence[Product]) -> tuple[list[np.ndarray], list[int]]:
        """Each space's vectors of `products` whose embedding text the index already holds (a
        price or stock update, a full feed imported again: encoding is most of an import's
        cost), and the rows still to encode. A vector depends only on that text and the encoder
        version, so it stays right even if the product changes again before this upsert is
        applied."""
        vectors = [np.zeros((len(products), space.index.dimension), dtype=np.float32) for space in self.spaces]
        missing = []
        for row, product in enumerate(products):
            slot = self.slot_of.get(product.id)
            if slot is not None and self.products[slot].embedding_text() == product.embedding_text():
                for space, matrix in zip(self.spaces, vectors):
                    matrix[row] = space.index.vectors[slot]
            else:
                missing.append(row)
        return vectors, missing

    def get(self, product_ids: Sequence[str]) -> tuple[list[Product], list[str]]:
        found, missing = [], []
        for product_id in product_ids:
            slot = self.slot_of.get(product_id)
            (found.append(self.products[slot]) if slot is not None else missing.append(product_id))
        return found, missing

    def allowed(self, filters: CandidateFilters, exclude: Sequence[str] = ()) -> np.ndarray:
        """A mask over the slots: live products matching `filters`, not in `exclude`."""
        allowed = self.dense.alive.copy()
        excluded = [self.slot_of[p] for p in exclude if p in self.slot_of]
        if excluded:
            allowed[excluded] = False
        return self.filters.narrow(allowed, filters)
