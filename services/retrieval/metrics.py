"""The retrieval index's metric instruments (names, units, attributes); the shared plumbing is in
services/common/metrics.py."""

from __future__ import annotations

from opentelemetry import metrics


class RetrievalMetrics:
    """The retrieval index.

    shelfwise.retrieval.products  gauge    {product}  -   (products in the index now)
    shelfwise.retrieval.upserted  counter  {product}  outcome (inserted | updated)
    shelfwise.retrieval.deleted   counter  {product}  -
    shelfwise.retrieval.dense_skipped counter {search} reason (overload | encoder_unavailable):
                                  text searches answered from BM25 alone
    """

    def __init__(self) -> None:
        meter = metrics.get_meter("shelfwise.retrieval")
        self._products = meter.create_gauge(
            "shelfwise.retrieval.products", unit="{product}", description="products in the retrieval index"
        )
        self._upserted = meter.create_counter(
            "shelfwise.retrieval.upserted", unit="{product}", description="products upserted, by outcome"
        )
        self._deleted = meter.create_counter(
            "shelfwise.retrieval.deleted", unit="{product}", description="products deleted from the index"
        )
        self._dense_skipped = meter.create_counter(
            "shelfwise.retrieval.dense_skipped", unit="{search}",
            description="text searches answered from BM25 alone, by reason (overload: no query vector in time)",
        )

    def index_size(self, products: int) -> None:
        self._products.set(products)

    def upserted(self, inserted: int, updated: int) -> None:
        if inserted:
            self._upserted.add(inserted, {"outcome": "inserted"})
        if updated:
            self._upserted.add(updated, {"outcome": "updated"})

    def deleted(self, count: int) -> None:
        if count:
            self._deleted.add(count)

    def dense_skipped(self, reason: str) -> None:
        self._dense_skipped.add(1, {"reason": reason})
