"""The fine-tuning data of `shelfwise train encoder`: judged (query, product) pairs from query and
qrels files, the refusal to train on held-out (test) files, and BM25-mined hard negatives."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

# A filename token that starts with "test" (test.qrels, test_queries.tsv, testset.tsv), but not
# "latest" or "contest".
_TEST_NAME = re.compile(r"(?<![a-z])test", re.IGNORECASE)


class HeldOutSplitError(ValueError):
    """A training or early-stopping input is (by its name) the held-out test split."""


def says_test(path: Path) -> bool:
    """True when the file's own name marks it as a test split (directories are not read:
    pytest's temporary folders are named after test functions)."""
    return bool(_TEST_NAME.search(Path(path).name))


def refuse_test_files(paths: Sequence[Path | None], allow_test: bool) -> None:
    """Raises HeldOutSplitError naming every input whose name says "test"."""
    named = [str(p) for p in paths if p is not None and says_test(p)]
    if named and not allow_test:
        raise HeldOutSplitError(
            f"refusing to train or early-stop on test-split files: {', '.join(named)}. The test split "
            "is for reporting only; train on the train split, stop on dev "
            "(pass --allow-test only if this file is not a held-out test set)"
        )


@dataclass(frozen=True)
class JudgedQuery:
    qid: str
    text: str
    query_set: str


@dataclass
class PairData:
    """Queries that have at least one relevant product in the catalogue, and those products."""

    queries: list[JudgedQuery]
    relevant: dict[str, frozenset[str]]  # qid -> relevant product ids (in the catalogue)
    skipped: int = 0  # queries without judgments or without a relevant catalogue product
    hard_negatives: dict[str, list[str]] = field(default_factory=dict)  # qid -> mined negatives

    def positives(self, query: JudgedQuery) -> list[str]:
        return sorted(self.relevant[query.qid])


def read_products(catalog: Path):
    from services.retrieval.catalog import read_catalog

    products, errors = read_catalog(Path(catalog))
    if errors:
        raise ValueError(f"{catalog}: {len(errors)} invalid rows, first: {errors[0].message}")
    if not products:
        raise ValueError(f"{catalog}: no products")
    return products


def judged_pairs(query_files: Sequence[Path], qrels_file: Path, product_ids: set[str]) -> PairData:
    """Every (query set, qid) with relevant products; identical query texts are kept once
    (a query may not appear twice in one batch, it would be its own false negative)."""
    from training.search.search_judgments import read_qrels, read_queries

    qrels = read_qrels(qrels_file)
    relevant = {
        qid: frozenset(doc for doc, grade in judged.items() if grade > 0 and doc in product_ids)
        for qid, judged in qrels.items()
    }
    queries: list[JudgedQuery] = []
    seen_texts: set[str] = set()
    skipped = 0
    for path in query_files:
        query_set = read_queries(path)
        for qid, text in query_set.queries.items():
            if not relevant.get(qid):
                skipped += 1
                continue
            if text in seen_texts:
                continue
            seen_texts.add(text)
            queries.append(JudgedQuery(qid, text, query_set.name))
    if not queries:
        raise ValueError(f"no query of {', '.join(map(str, query_files))} has a relevant product of the "
                         f"catalogue in {qrels_file}")
    return PairData(queries, {q.qid: relevant[q.qid] for q in queries}, skipped)


def mine_hard_negatives(data: PairData, products, depth: int = 50) -> dict[str, list[str]]:
    """qid -> products in BM25's top ``depth`` for any text of that query id (an English and
    a Chinese query judged alike share their id, so the Chinese one gets the English one's
    look-alikes) that the qrels do not call relevant, best first."""
    from services.retrieval.lexical import LexicalIndex

    index = LexicalIndex()
    index.upsert(products)
    mined: dict[str, list[str]] = {}
    for query in data.queries:
        hits, _ = index.search(query.text, depth)
        negatives = mined.setdefault(query.qid, [])
        negatives += [doc for doc, _ in hits if doc not in data.relevant[query.qid] and doc not in negatives]
    return {qid: negatives for qid, negatives in mined.items() if negatives}
