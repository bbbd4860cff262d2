"""The Instacart benchmark builder: a published, stable split that keeps test aisles out of
training, our own queries for every queried aisle, and judgments that match the data."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from services.common.config import shared_data_dir
from training.search import instacart

DATA_DIR = shared_data_dir({"SHELFWISE_DATA_DIR": os.environ.get(
    "SHELFWISE_DATA_DIR", str(Path(__file__).resolve().parents[4] / ".." / "shared" / "data"))})
needs_data = pytest.mark.skipif(
    not (DATA_DIR / "instacart" / "products.csv").is_file(),
    reason=f"Instacart data not found under {DATA_DIR} (set SHELFWISE_DATA_DIR)",
)


def test_split_depends_only_on_the_aisle_id_and_has_the_published_proportions():
    splits = [instacart.split_of(aisle_id) for aisle_id in range(1, 5001)]
    assert splits == [instacart.split_of(aisle_id) for aisle_id in range(1, 5001)]
    shares = {name: splits.count(name) / len(splits) for name, _ in instacart.SPLIT_FRACTIONS}
    for name, fraction in instacart.SPLIT_FRACTIONS:
        assert shares[name] == pytest.approx(fraction, abs=0.03)


def test_one_typo_changes_exactly_one_long_word_and_is_reproducible():
    import random

    text = "packaged cheese for the kids"
    first = instacart.one_typo(text, random.Random(5))
    assert first == instacart.one_typo(text, random.Random(5))
    changed = [(a, b) for a, b in zip(text.split(" "), first.split(" ")) if a != b]
    assert len(changed) == 1 and len(changed[0][0]) >= 4
    assert instacart.one_typo("tea 绿茶", random.Random(1)) == "tea 绿茶"


def test_written_queries_cover_every_queried_aisle_without_instacart_text():
    written = instacart.read_written_queries()
    assert len(written) == 132 and 6 not in written and 100 not in written
    for queries in written.values():
        assert any("\u4e00" <= ch <= "\u9fff" for ch in queries.zh_name + queries.zh_describe)


@needs_data
def test_built_benchmark_keeps_splits_apart_and_judges_the_aisle_products(tmp_path):
    files = instacart.build(DATA_DIR, tmp_path)
    with (DATA_DIR / "instacart" / "products.csv").open(newline="", encoding="utf-8") as handle:
        aisle_of = {row["product_id"]: int(row["aisle_id"]) for row in csv.DictReader(handle)}
    catalog = [json.loads(line) for line in files.catalog.read_text(encoding="utf-8").splitlines()]
    assert len(catalog) == len(aisle_of)
    assert all(set(row) == {"id", "title", "category", "price", "locale"} for row in catalog)  # no aisle leaks

    aisles_by_split = {}
    for split, _ in instacart.SPLIT_FRACTIONS:
        judged = {}
        for line in files.qrels(split).read_text().splitlines():
            qid, _, product_id, grade = line.split()
            judged.setdefault(qid, set()).add(product_id)
            assert grade == "1"
        aisles = {int(qid.split("-")[0][1:]) for qid in judged}
        assert all(instacart.split_of(aisle) == split for aisle in aisles)
        for qid, products in judged.items():
            aisle = int(qid.split("-")[0][1:])
            assert products == {p for p, a in aisle_of.items() if a == aisle}
        for query_set in instacart.QUERY_SETS:
            lines = files.queries(split, query_set).read_text(encoding="utf-8").splitlines()
            assert {line.split("\t")[0] for line in lines} == set(judged)
        aisles_by_split[split] = aisles
    assert not aisles_by_split["test"] & (aisles_by_split["train"] | aisles_by_split["dev"])
    assert not aisles_by_split["train"] & aisles_by_split["dev"]
