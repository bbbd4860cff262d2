"""Extraction and spelling correction for `shelfwise eval query-understanding`: the hand-labelled
queries (training/search/benchmarks/), scoring the understander field by field (price, brands,
categories, attributes), and spelling correction on clean, seeded-misspelt and non-English
queries."""

from __future__ import annotations

import json
import math
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from services.common.text import normalize
from services.query_understanding.understanding import QueryUnderstander, Understanding
from services.query_understanding.vocabulary import CatalogVocabulary
from training.search.misspell import misspell

DEFAULT_LABELS = Path(__file__).resolve().parent / "benchmarks" / "query_understanding_labels.jsonl"


DEFAULT_FOREIGN = Path(__file__).resolve().parent / "benchmarks" / "non_english_queries.tsv"


DEFAULT_MISSPELL_SEEDS = 5
FIELDS = ("price", "brands", "categories", "attributes")


PRICE_TOLERANCE = 0.01


@dataclass(frozen=True)
class LabelledQuery:
    """One labelled query. `clean` is the intended spelling (== `query` unless it has typos)."""

    id: str
    lang: str
    query: str
    clean: str
    price_min: float | None
    price_max: float | None
    brands: frozenset[str]
    categories: frozenset[str]
    attributes: frozenset[tuple[str, str]]


def _attribute_key(name: str, value: str) -> tuple[str, str]:
    # "500 ml" and "500ml" (both spellings occur in the catalogue) are the same filter value.
    return normalize(name), "".join(normalize(value).split())


def _optional_number(record: Mapping[str, Any], key: str, where: str) -> float | None:
    value = record.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where}.{key}: must be a number or null, got {value!r}")
    return float(value)


def _names(record: Mapping[str, Any], key: str, where: str) -> frozenset[str]:
    value = record.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"{where}.{key}: must be a list of non-empty strings")
    return frozenset(value)


def read_labels(path: Path) -> list[LabelledQuery]:
    """The labelled queries of a JSONL file; a malformed line is an error naming it."""
    rows: list[LabelledQuery] = []
    seen: set[str] = set()
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{where}: not valid JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected an object")
        for key in ("id", "lang", "query"):
            if not isinstance(record.get(key), str) or not record[key].strip():
                raise ValueError(f"{where}.{key}: must be a non-empty string")
        if record["id"] in seen:
            raise ValueError(f"{where}.id: duplicate id {record['id']!r}")
        seen.add(record["id"])
        attributes = record.get("attributes", {})
        if not isinstance(attributes, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in attributes.items()
        ):
            raise ValueError(f"{where}.attributes: must be an object of name to value strings")
        rows.append(
            LabelledQuery(
                id=record["id"],
                lang=record["lang"],
                query=record["query"],
                clean=record.get("clean") or record["query"],
                price_min=_optional_number(record, "price_min", where),
                price_max=_optional_number(record, "price_max", where),
                brands=_names(record, "brands", where),
                categories=_names(record, "categories", where),
                attributes=frozenset(_attribute_key(k, v) for k, v in attributes.items()),
            )
        )
    if not rows:
        raise ValueError(f"{path}: no labelled queries")
    return rows


def read_foreign_queries(path: Path) -> list[tuple[str, str]]:
    """(language, query) pairs of a `lang<TAB>query` file: queries the corrector must leave alone."""
    pairs = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        lang, tab, query = line.partition("\t")
        if not tab or not lang.strip() or not query.strip():
            raise ValueError(f"{path}:{number}: expected 'lang<TAB>query'")
        pairs.append((lang.strip(), query.strip()))
    return pairs


def demo_catalog_path() -> Path:
    # The demo catalogue ships as package data of the CLI; read it in place.
    from importlib import resources

    return Path(str(resources.files("services.local") / "demo_catalog.jsonl"))


def load_vocabulary(catalog: Path) -> CatalogVocabulary:
    """The vocabulary query understanding would build from this catalogue file."""
    from services.retrieval.catalog import read_catalog

    products, errors = read_catalog(catalog)
    if errors:
        first = errors[0]
        raise ValueError(f"{catalog}: {len(errors)} invalid rows (first: row {first.row}: {first.message})")
    return CatalogVocabulary.from_products(
        {
            "title": p.title,
            "description": p.description,
            "brand": p.brand,
            "category": p.category,
            "attributes": p.attributes,
        }
        for p in products
    )


@dataclass
class Counts:
    """Micro-averaged counts of one field: tp, fp, fn."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def add(self, expected: Iterable, predicted: Iterable) -> bool:
        expected, predicted = set(expected), set(predicted)
        self.tp += len(expected & predicted)
        self.fp += len(predicted - expected)
        self.fn += len(expected - predicted)
        return expected == predicted

    @property
    def precision(self) -> float:
        # No prediction and nothing to find is perfect precision, not 0/0.
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "f1": round(self.f1, 4),
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
        }


def _price_items(low: float | None, high: float | None) -> set[tuple[str, float]]:
    # Bounds are rounded to the cent so "within one cent" becomes set equality.
    items = set()
    if low is not None:
        items.add(("min", round(low, 2)))
    if high is not None:
        items.add(("max", round(high, 2)))
    return items


def _price_match(expected: set, predicted: set) -> set:
    """Predicted bounds re-keyed to the expected value when within `PRICE_TOLERANCE`."""
    matched = set()
    for side, value in predicted:
        twin = next(
            (e for e in expected if e[0] == side and abs(e[1] - value) <= PRICE_TOLERANCE + 1e-9), None
        )
        matched.add(twin or (side, value))
    return matched


def prediction_fields(understanding: Understanding) -> dict[str, set]:
    return {
        "price": _price_items(understanding.price_min, understanding.price_max),
        "brands": set(understanding.brands),
        "categories": {name for name, _ in understanding.categories},
        "attributes": {_attribute_key(k, v) for k, v in understanding.attributes.items()},
    }


def expected_fields(row: LabelledQuery) -> dict[str, set]:
    return {
        "price": _price_items(row.price_min, row.price_max),
        "brands": set(row.brands),
        "categories": set(row.categories),
        "attributes": set(row.attributes),
    }


@dataclass
class ExtractionScores:
    """Counts per group ("overall", then each language) and field, plus per-query outcomes."""

    counts: dict[str, dict[str, Counts]] = field(default_factory=dict)
    queries: dict[str, int] = field(default_factory=Counter)
    all_right: dict[str, int] = field(default_factory=Counter)
    language_right: dict[str, int] = field(default_factory=Counter)
    failures: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        groups = {}
        for group, per_field in self.counts.items():
            n = self.queries[group]
            groups[group] = {
                "queries": n,
                "fields": {name: counts.as_dict() for name, counts in per_field.items()},
                "all_fields_right": round(self.all_right[group] / n, 4) if n else None,
                "language_accuracy": round(self.language_right[group] / n, 4) if n else None,
            }
        return {"groups": groups, "failures": self.failures}


def _expected_language(lang: str) -> str:
    # Labels carry locales ("zh-CN"); detection reports ISO 639-1 codes ("zh").
    return lang.split("-")[0].lower()


def evaluate_extraction(
    understander: QueryUnderstander, rows: Sequence[LabelledQuery], texts: Sequence[str] | None = None
) -> ExtractionScores:
    """Scores `understander` on `rows`; `texts` replaces the queries (misspelt variants)."""
    scores = ExtractionScores()
    for i, row in enumerate(rows):
        text = row.query if texts is None else texts[i]
        understanding = understander.understand(text)
        predicted, expected = prediction_fields(understanding), expected_fields(row)
        predicted["price"] = _price_match(expected["price"], predicted["price"])
        wrong = {}
        for group in ("overall", row.lang):
            per_field = scores.counts.setdefault(group, {name: Counts() for name in FIELDS})
            scores.queries[group] += 1
            for name in FIELDS:
                if not per_field[name].add(expected[name], predicted[name]):
                    wrong[name] = {"expected": sorted(expected[name]), "got": sorted(predicted[name])}
            if not wrong:
                scores.all_right[group] += 1
            if understanding.language == _expected_language(row.lang):
                scores.language_right[group] += 1
        if wrong:
            scores.failures.append(
                {"id": row.id, "query": text, "corrected": understanding.corrected, "wrong": wrong}
            )
    return scores


def _words_changed(before: str, after: str) -> int:
    a, b = before.split(), after.split()
    if len(a) != len(b):
        return max(len(a), len(b))
    return sum(1 for x, y in zip(a, b) if x != y)


def evaluate_spelling(
    understander: QueryUnderstander,
    rows: Sequence[LabelledQuery],
    seeds: int = DEFAULT_MISSPELL_SEEDS,
    rate: float = 1.0,
    foreign: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    """Spelling correction on clean English queries, on seeded misspellings of them, and on
    `foreign` (language, query) pairs, which the English corrector must leave alone."""
    rows = [row for row in rows if _expected_language(row.lang) == "en"]
    clean_rows = [
        LabelledQuery(**{**row.__dict__, "query": row.clean}) for row in rows
    ]
    # Clean queries: any change is a false correction.
    changed = []
    for row in clean_rows:
        corrected = understander.understand(row.clean).corrected
        if corrected != normalize(row.clean):
            changed.append((row.clean, corrected))
    restored = noisy = unchanged_by_typos = typo_words = detected_english = 0
    per_seed_f1: dict[str, list[float]] = defaultdict(list)
    examples: list[dict[str, str]] = []
    for seed in range(seeds):
        rng = random.Random(seed)
        texts = [misspell(row.clean, rng, rate) for row in clean_rows]
        for row, text in zip(clean_rows, texts):
            if normalize(text) == normalize(row.clean):
                unchanged_by_typos += 1  # nothing to misspell ("2 person tent" at rate 1 has "person")
                continue
            noisy += 1
            typo_words += _words_changed(normalize(row.clean), normalize(text))
            understanding = understander.understand(text)
            corrected = understanding.corrected
            detected_english += understanding.language == "en"
            if corrected == normalize(row.clean):
                restored += 1
            elif len(examples) < 25:
                examples.append({"clean": row.clean, "misspelt": text, "corrected": corrected})
        misspelt_scores = evaluate_extraction(understander, clean_rows, texts).counts["overall"]
        for name in FIELDS:
            per_seed_f1[name].append(misspelt_scores[name].f1)
    clean_scores = evaluate_extraction(understander, clean_rows).counts["overall"]
    foreign_changed = []
    for lang, query in foreign:
        understanding = understander.understand(query)
        if understanding.corrected != understanding.normalized:
            foreign_changed.append({"lang": lang, "query": query, "corrected": understanding.corrected})
    return {
        "queries": len(clean_rows),
        "seeds": seeds,
        "rate": rate,
        "clean_false_corrections": len(changed),
        "clean_false_correction_rate": round(len(changed) / len(clean_rows), 4) if clean_rows else None,
        "false_correction_examples": [{"clean": a, "corrected": b} for a, b in changed],
        "misspelt_queries": noisy,
        "misspelt_words": typo_words,
        "queries_without_eligible_words": unchanged_by_typos,
        "restored": restored,
        "restored_rate": round(restored / noisy, 4) if noisy else None,
        "misspelt_detected_english": detected_english,
        "not_restored_examples": examples,
        "extraction_f1_clean": {name: round(clean_scores[name].f1, 4) for name in FIELDS},
        "extraction_f1_misspelt": {
            name: round(float(np.mean(values)), 4) for name, values in per_seed_f1.items()
        },
        "foreign_queries": len(foreign),
        "foreign_changed": len(foreign_changed),
        "foreign_changed_examples": foreign_changed,
    }
