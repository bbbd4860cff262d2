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
    shelfwise.retrieval.facets    counter  {facet}    field (category | brand | price | attribute),
                                  disjunctive (true | false): facets counted
    shelfwise.retrieval.sorted    counter  {request}  key (price_ascending | ... ): explicit sorts
    shelfwise.retrieval.rules_applied counter {rule}  action (pin | hide | bury | boost | synonym):
                                  rules that changed an answer
    shelfwise.retrieval.rules_version gauge {version} - (the merchandising rules version in force)
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

        self._facets = meter.create_counter(
            "shelfwise.retrieval.facets", unit="{facet}", description="facets counted, by field kind and disjunctive"
        )
        self._sorted = meter.create_counter(
            "shelfwise.retrieval.sorted", unit="{request}", description="requests ordered by an explicit sort, by key"
        )
        self._rules_applied = meter.create_counter(
            "shelfwise.retrieval.rules_applied", unit="{rule}", description="merchandising rules that changed an answer"
        )
        self._rules_version = meter.create_gauge(
            "shelfwise.retrieval.rules_version", unit="{version}", description="merchandising rules version in force"
        )

    def facet(self, kind: str, disjunctive: bool) -> None:
        self._facets.add(1, {"field": kind, "disjunctive": str(disjunctive).lower()})

    def sorted(self, key: str) -> None:
        self._sorted.add(1, {"key": key})

    def rule_applied(self, action: str) -> None:
        self._rules_applied.add(1, {"action": action})

    def rules_version(self, version: int) -> None:
        self._rules_version.set(version)

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
