"""BM25 over the catalogue with tantivy (a Lucene-style engine), updated in place.

Documents are indexed as pre-computed terms (`services.common.text.index_terms`, the same
function the query side uses) so English stemming and Chinese word segmentation are identical
on both sides. Queries are built from term objects, never parsed from user text, so no query
syntax can be injected. Filters run inside the engine (term sets, price range), so a selective
filter never empties the top of the list.
"""

from __future__ import annotations

from typing import Sequence

import math

import tantivy

from services.common.text import facet_form, index_terms
from services.retrieval.catalog import Product
from services.retrieval.filters import CandidateFilters


def attribute_token(name: str, value: str) -> str:
    return f"{facet_form(name)}={facet_form(value)}"


class LexicalIndex:
    def __init__(self) -> None:
        builder = tantivy.SchemaBuilder()
        builder.add_text_field("id", stored=True, tokenizer_name="raw")
        builder.add_text_field("text", stored=False, tokenizer_name="whitespace")
        builder.add_text_field("category", stored=False, tokenizer_name="raw")
        builder.add_text_field("brand", stored=False, tokenizer_name="raw")
        builder.add_text_field("attribute", stored=False, tokenizer_name="raw")
        builder.add_float_field("price", indexed=True, fast=True)
        # "out" for a product out of stock (filters.in_stock_only leaves those out).
        builder.add_text_field("stock", stored=False, tokenizer_name="raw")
        self._schema = builder.build()
        self._index = tantivy.Index(self._schema)  # in RAM: rebuilt from PostgreSQL at start-up
        self._writer = self._index.writer(heap_size=50_000_000, num_threads=1)

    @staticmethod
    def document_terms(product: Product) -> str:
        # The title counts twice: it is what the shopper sees and what shops write carefully.
        text = " ".join([product.title, product.title, product.brand, product.category, product.description])
        return " ".join(index_terms(text) + index_terms(" ".join(product.attributes.values())))

    def upsert(self, products: Sequence[Product]) -> None:
        for product in products:
            self._writer.delete_documents_by_term("id", product.id)
            document = tantivy.Document(
                id=product.id,
                text=self.document_terms(product),
                category=product.category,
                brand=product.brand,
                price=float(product.price),
            )
            for name, value in product.attributes.items():
                document.add_text("attribute", attribute_token(name, value))
            if not product.in_stock:
                document.add_text("stock", "out")
            self._writer.add_document(document)
        self._commit()

    def delete(self, product_ids: Sequence[str]) -> None:
        for product_id in product_ids:
            self._writer.delete_documents_by_term("id", product_id)
        self._commit()

    def _commit(self) -> None:
        self._writer.commit()
        self._index.reload()

    def _filter_clauses(self, filters: CandidateFilters) -> list:
        categories, brands = filters.categories, filters.brands
        price_min, price_max = filters.price_min, filters.price_max
        clauses = []
        if categories:
            clauses.append((tantivy.Occur.Must, tantivy.Query.term_set_query(self._schema, "category", list(categories))))
        if brands:
            clauses.append((tantivy.Occur.Must, tantivy.Query.term_set_query(self._schema, "brand", list(brands))))
        if price_min is not None or price_max is not None:
            clauses.append(
                (
                    tantivy.Occur.Must,
                    tantivy.Query.range_query(self._schema, "price", tantivy.FieldType.Float, price_min, price_max),
                )
            )
        for name, value in filters.attributes.items():
            clauses.append(
                (tantivy.Occur.Must, tantivy.Query.term_query(self._schema, "attribute", attribute_token(name, value)))
            )
        if filters.in_stock_only:
            clauses.append((tantivy.Occur.MustNot, tantivy.Query.term_query(self._schema, "stock", "out")))
        return clauses

    def search(
        self, query_text: str, limit: int, filters: CandidateFilters = CandidateFilters(), expansions: str = ""
    ) -> tuple[list[tuple[str, float]], float]:
        """(product id, BM25 score) best first, only products passing the filters; and the
        query's ceiling: the score of an average-length document holding each term once.
        `expansions`: more text to match (synonyms), left out of the ceiling, so a product that
        matches the synonym covers the query as fully as one that matches the word."""
        terms = list(dict.fromkeys(index_terms(query_text)))
        matched = list(dict.fromkeys(terms + index_terms(expansions))) if expansions else terms
        if not matched:
            return [], 0.0
        text_query = tantivy.Query.boolean_query(
            [(tantivy.Occur.Should, tantivy.Query.term_query(self._schema, "text", term)) for term in matched]
        )
        clauses = [(tantivy.Occur.Must, text_query)] + self._filter_clauses(filters)
        searcher = self._index.searcher()
        hits = searcher.search(tantivy.Query.boolean_query(clauses), limit).hits
        ceiling = self._ceiling(searcher, terms) if terms else 0.0
        return [(searcher.doc(address)["id"][0], float(score)) for score, address in hits], ceiling

    @staticmethod
    def _ceiling(searcher, terms: list[str]) -> float:
        # With tf = 1 and an average length, BM25's term-frequency factor is exactly 1, so each
        # term adds its idf (tantivy's: ln(1 + (N - df + 0.5) / (df + 0.5))). A term no product
        # has still counts: the query asked for it and nothing matches it lexically.
        documents = searcher.num_docs
        ceiling = 0.0
        for term in terms:
            frequency = searcher.doc_freq("text", term)
            ceiling += math.log(1.0 + (documents - frequency + 0.5) / (frequency + 0.5))
        return ceiling

    @property
    def size(self) -> int:
        return self._index.searcher().num_docs
