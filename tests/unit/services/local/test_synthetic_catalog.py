"""The synthetic catalogue: deterministic from its seed, streamed, valid as an import, marked as
synthetic, with a share of Chinese titles; its queries come from the same vocabulary."""

from __future__ import annotations

import itertools

from services.local.synthetic_catalog import (
    CATEGORIES,
    DESCRIPTION,
    SOURCE_TAG,
    generate_products,
    generate_queries,
    write_jsonl,
)
from services.retrieval.catalog import read_catalog, validate_product


def test_the_same_seed_gives_the_same_catalogue_and_a_larger_one_starts_with_the_smaller():
    small = list(generate_products(300, seed=3))
    assert small == list(generate_products(300, seed=3))
    assert list(generate_products(1000, seed=3))[:300] == small
    assert small != list(generate_products(300, seed=4))


def test_products_are_streamed_so_a_huge_catalogue_needs_no_memory_up_front():
    first = list(itertools.islice(generate_products(10**9), 3))
    assert [p.id for p in first] == ["syn-0000001", "syn-0000002", "syn-0000003"]


def test_every_product_is_valid_unique_and_marked_synthetic():
    products = list(generate_products(2000))
    for index, product in enumerate(products):
        validate_product(product, f"products[{index}]")
        assert dict(product.extra) == SOURCE_TAG
    assert len({p.id for p in products}) == len(products)
    assert {p.category for p in products} == {c.name for c in CATEGORIES}
    assert "SYNTHETIC" in DESCRIPTION and "not real" in DESCRIPTION


def test_some_titles_are_chinese_and_most_are_english():
    products = list(generate_products(2000))
    chinese = [p for p in products if p.locale == "zh-CN"]
    assert 0.02 < len(chinese) / len(products) < 0.10
    assert all(any("\u4e00" <= ch <= "\u9fff" for ch in p.title) for p in chinese)


def test_product_fields_look_like_a_shop_catalogue():
    for product in itertools.islice(generate_products(500), 500):
        assert product.brand and product.brand in product.title
        assert product.price > 0 and product.currency == "USD"
        assert product.attributes and product.description


def test_the_catalogue_written_as_jsonl_imports_without_errors(tmp_path):
    path = write_jsonl(tmp_path / "synthetic.jsonl", 200)
    products, errors = read_catalog(path)
    assert errors == []
    assert [p.id for p in products] == [p.id for p in generate_products(200)]
    assert all(p.extra.get("source") == "synthetic" for p in products)


def test_queries_are_deterministic_and_include_chinese_price_caps_and_typos():
    queries = generate_queries(2000, seed=5)
    assert queries == generate_queries(2000, seed=5)
    assert any(any("\u4e00" <= ch <= "\u9fff" for ch in q) for q in queries)
    assert any(" under $" in q for q in queries)
    nouns = {noun for c in CATEGORIES for noun in c.nouns}
    # A misspelled query has a word that is no catalogue word (queries are otherwise built from them).
    vocabulary = {w for noun in nouns for w in noun.split()} | {w for c in CATEGORIES for u in c.uses for w in u.split()}
    assert any(all(w not in vocabulary for w in q.split()[-1:]) and "$" not in q and q.isascii() for q in queries)
