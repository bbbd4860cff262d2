"""`shelfwise eval query-understanding`: how well query understanding reads shoppers' queries.

Three measurements, all through the real domain code (`QueryUnderstander` over a
`CatalogVocabulary` built from a catalogue file, by default the demo catalogue):

1. **Extraction** on a hand-labelled set (`training/search/benchmarks/query_understanding_labels.jsonl`,
   English and Chinese queries over the demo catalogue's vocabulary, labelled with what a shop
   would expect, see `training/search/benchmarks/query_understanding.md`). Scored field by field: a price bound is
   right when it equals the label within one cent; brands, categories and attributes are
   compared as sets ((name, value) pairs for attributes, values compared case- and
   space-insensitively, so "500 ml" and "500ml" agree). Micro precision/recall/F1 per field, per
   language and overall, the share of queries with every field right, and language detection.
2. **Spelling robustness** on the labelled English queries: each clean query is misspelt by
   `training.search.misspell.misspell` (one keyboard typo per word of 4+ letters, several seeds); we
   count how often the corrected query is the clean query again, how often a clean query is
   changed at all (false corrections), and extraction F1 on the misspelt queries. Non-English
   queries (`training/search/benchmarks/non_english_queries.tsv`) must come through unchanged too.
3. **Query → category classification** on real queries whose categories Shelfwise's vocabulary
   does not know: WANDS (Wayfair queries and their product class) and, optionally, Best Buy
   (popular queries; the label is the query's top `hierarchicalCategories.lvl1` facet). Seeded
   stratified split (classes with a single query go to train), then: (a) zero-shot nearest
   class name by the project's text encoder; (b) k-NN and logistic regression on its
   embeddings (also with the class names added as training examples); (c) a TF-IDF + logistic
   regression lexical baseline. Logistic regression's C comes from cross-validation on the
   training split. Accuracy and macro-F1 with
   percentile-bootstrap 95% intervals over the test queries.

Embeddings come from the ONNX models of `model_repository/` through the embedded runtime
(`services.common.inference.EmbeddedOnnxRuntime`, `services.common.text_encoder.TextEncoder`),
the same files the services serve. The data sets are read in place from `--data-dir`
(`$SHELFWISE_DATA_DIR`, default `../shared/data`); their licences forbid copying them into the
repository, and a missing folder skips that part with the reason.

Entry point: `main(argv) -> int` (0 on success, 2 on bad input).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import inspect
import json
import math
import os
import random
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from services.common.config import model_repository, shared_data_dir
from services.common.text import normalize
from services.query_understanding.understanding import QueryUnderstander, Understanding
from services.query_understanding.vocabulary import CatalogVocabulary
from training.search.misspell import misspell
from training.stats import percentile_interval, resampled_indices

__all__ = [
    "LabelledQuery",
    "classification_report",
    "evaluate_extraction",
    "evaluate_spelling",
    "main",
    "read_labels",
    "stratified_split",
]

DEFAULT_LABELS = Path(__file__).resolve().parent / "benchmarks" / "query_understanding_labels.jsonl"
DEFAULT_FOREIGN = Path(__file__).resolve().parent / "benchmarks" / "non_english_queries.tsv"
FIELDS = ("price", "brands", "categories", "attributes")
PRICE_TOLERANCE = 0.01
DEFAULT_SEED = 13
DEFAULT_TEST_FRACTION = 0.3
DEFAULT_BOOTSTRAP = 2000
DEFAULT_MISSPELL_SEEDS = 5
ENCODER_MODELS = ("text_encoder", "text_encoder_multilingual")
# Logistic regression's C is chosen by 3-fold cross-validation on the training split only
# (never the test split). One fixed C does not suit every encoder: e5 embeddings all lie in a
# narrow cone (cosines 0.7-0.9), so at C=10 they were badly underfit while MiniLM's were not.
LOGREG_CS = (1.0, 10.0, 100.0, 1000.0, 10000.0)
CV_FOLDS = 3
KNN_K = 5


# ----------------------------------------------------------------------------- labels


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


# ------------------------------------------------------------------------- extraction


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


# --------------------------------------------------------------------------- spelling


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


# --------------------------------------------------------------------- classification


def stratified_split(
    labels: Sequence[str], test_fraction: float = DEFAULT_TEST_FRACTION, seed: int = DEFAULT_SEED
) -> tuple[list[int], list[int]]:
    """(train indices, test indices): per class, round(n x fraction) queries to test, at least
    one and never all, so every test class has training queries; single-query classes go to
    train. Deterministic for a seed (classes in sorted order, one seeded shuffle each)."""
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_class[label].append(i)
    rng = random.Random(seed)
    train: list[int] = []
    test: list[int] = []
    for label in sorted(by_class):
        members = by_class[label][:]
        rng.shuffle(members)
        if len(members) < 2:
            train += members
            continue
        k = min(len(members) - 1, max(1, round(len(members) * test_fraction)))
        test += members[:k]
        train += members[k:]
    return sorted(train), sorted(test)


def _macro_f1(truth: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """Macro-F1 over the classes present in `truth` (integer class ids), as scikit-learn's
    `f1_score(average="macro", labels=unique(truth), zero_division=0)`: a class the (re)sampled
    test split does not contain has no recall to average. Written out because the bootstrap
    calls it thousands of times and scikit-learn's input checks dominate at this size."""
    true_counts = np.bincount(truth, minlength=n_classes)
    pred_counts = np.bincount(pred, minlength=n_classes)
    hits = np.bincount(truth[truth == pred], minlength=n_classes)
    present = true_counts > 0
    return float(np.mean(2 * hits[present] / (true_counts[present] + pred_counts[present])))


def classification_report(
    y_true: Sequence[str], y_pred: Sequence[str], samples: int = DEFAULT_BOOTSTRAP, seed: int = DEFAULT_SEED
) -> dict[str, Any]:
    """Accuracy and macro-F1 with percentile-bootstrap 95% intervals over test queries.

    The macro-F1 interval is over the classes present in each resample, so with many classes
    of one or two test queries it sits somewhat above the point estimate (a resample holds
    fewer, duplicated classes); compare methods by their intervals on the same split.
    """
    names = {name: i for i, name in enumerate(sorted(set(y_true) | set(y_pred)))}
    truth = np.asarray([names[y] for y in y_true], dtype=np.int64)
    pred = np.asarray([names[y] for y in y_pred], dtype=np.int64)
    accuracies, f1s = [], []
    for pick in resampled_indices(len(truth), samples, seed):
        accuracies.append(float(np.mean(truth[pick] == pred[pick])))
        f1s.append(_macro_f1(truth[pick], pred[pick], len(names)))

    def interval(values: list[float]) -> list[float]:
        return [round(bound, 4) for bound in percentile_interval(values)]

    return {
        "n": len(truth),
        "accuracy": round(float(np.mean(truth == pred)), 4),
        "accuracy_ci95": interval(accuracies) if samples else None,
        "macro_f1": round(_macro_f1(truth, pred, len(names)), 4),
        "macro_f1_ci95": interval(f1s) if samples else None,
    }


@dataclass(frozen=True)
class LabelledTexts:
    name: str
    texts: list[str]
    labels: list[str]
    dropped: int  # queries without a label


def read_wands(data_dir: Path) -> LabelledTexts:
    path = Path(data_dir) / "wands" / "query.csv"
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if not rows or not {"query", "query_class"} <= set(rows[0]):
        raise ValueError(f"{path}: expected tab-separated columns query_id, query, query_class")
    kept = [(r["query"].strip(), r["query_class"].strip()) for r in rows]
    labelled = [(q, c) for q, c in kept if q and c]
    return LabelledTexts("wands", [q for q, _ in labelled], [c for _, c in labelled], len(kept) - len(labelled))


def read_bestbuy(data_dir: Path, facet: str = "hierarchicalCategories.lvl1") -> LabelledTexts:
    """Best Buy popular queries labelled with their most frequent category facet value."""
    path = Path(data_dir) / "algolia_bestbuy" / "query_suggestions.json"
    records = json.loads(path.read_text(encoding="utf-8"))
    seen: set[str] = set()
    texts, labels, dropped = [], [], 0
    for record in records:
        query = str(record.get("query", "")).strip()
        if not query or query.casefold() in seen:
            dropped += bool(query)
            continue
        seen.add(query.casefold())
        facets = (((record.get("instant_search") or {}).get("facets") or {}).get("exact_matches") or {})
        values = facets.get(facet) or []
        if not values:
            dropped += 1
            continue
        top = max(values, key=lambda v: v.get("count", 0))
        texts.append(query)
        labels.append(str(top["value"]))
    return LabelledTexts("bestbuy", texts, labels, dropped)


def _encoder_factory(repository: Path, model: str):
    """A TextEncoder for `model`, whatever this checkout's TextEncoder signature is."""
    from services.common.inference import EmbeddedOnnxRuntime, find_model
    from services.common.text_encoder import TextEncoder

    found = find_model(repository, model)
    if found is None:
        return None, f"{model} is not in {repository} (run `shelfwise export`)"
    backend = EmbeddedOnnxRuntime(repository, {model: found.version})
    parameters = inspect.signature(TextEncoder.__init__).parameters
    if "model_name" in parameters:
        encoder = TextEncoder(backend, model_name=model)
    elif model == "text_encoder":
        encoder = TextEncoder(backend)
    else:
        return None, f"this TextEncoder serves text_encoder only, not {model}"
    return encoder, f"{model} v{found.version}"


async def _encode(encoder, texts: Sequence[str], kind: str) -> np.ndarray:
    # Encoders with query/passage prefixes (e5) take `kind`; older ones embed text as is.
    if "kind" in inspect.signature(encoder.encode).parameters:
        return await encoder.encode(list(texts), kind=kind, timeout=600)
    return await encoder.encode(list(texts), timeout=600)


def _tfidf_logreg():
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    # Words for meaning, character n-grams for typos and compounds ("nightstand"/"night stand").
    features = make_union(
        TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True),
    )
    return make_pipeline(features, LogisticRegression(max_iter=5000))


def _choose_c(model, x, y, seed: int, parameter: str = "C") -> float:
    """C with the best cross-validated accuracy on (x, y), the training split. Folds are plain
    shuffled k-fold: many classes have one or two training queries, too few to stratify."""
    from sklearn.model_selection import GridSearchCV, KFold

    search = GridSearchCV(
        model,
        {parameter: list(LOGREG_CS)},
        cv=KFold(CV_FOLDS, shuffle=True, random_state=seed),
        scoring="accuracy",
        # Worker processes take a second or two to start: not worth it for a few hundred rows.
        n_jobs=1 if len(y) < 1000 else min(CV_FOLDS, os.cpu_count() or 1),
    )
    search.fit(x, y)
    return float(search.best_params_[parameter])


def run_classification(
    data: LabelledTexts,
    encoders: Sequence[tuple[str, Any]],
    test_fraction: float,
    seed: int,
    bootstrap: int,
) -> dict[str, Any]:
    import warnings

    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    # Query classification has many classes with few queries each; scikit-learn warns that this
    # "could represent a regression problem". It does not.
    warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%")
    train, test = stratified_split(data.labels, test_fraction, seed)
    texts, labels = np.asarray(data.texts, dtype=object), np.asarray(data.labels, dtype=object)
    y_train, y_test = labels[train], labels[test]
    classes = sorted(set(data.labels))
    results: dict[str, Any] = {}

    def record(method: str, predicted: Sequence[str], seconds: float) -> None:
        results[method] = {**classification_report(y_test, predicted, bootstrap, seed), "seconds": round(seconds, 2)}

    chosen_c: dict[str, float] = {}
    record("majority class", [Counter(y_train).most_common(1)[0][0]] * len(test), 0.0)
    started = time.perf_counter()
    lexical = _tfidf_logreg()
    chosen_c["tf-idf + logreg"] = _choose_c(lexical, texts[train], y_train, seed, "logisticregression__C")
    lexical.set_params(logisticregression__C=chosen_c["tf-idf + logreg"]).fit(texts[train], y_train)
    record("tf-idf + logreg", lexical.predict(texts[test]), time.perf_counter() - started)

    for name, encoder in encoders:
        started = time.perf_counter()
        # Class names are short texts compared with short texts (a symmetric task), so both
        # sides are encoded as queries, as e5 recommends for symmetric similarity.
        query_vectors = asyncio.run(_encode(encoder, data.texts, "query"))
        class_vectors = asyncio.run(_encode(encoder, classes, "query"))
        encode_seconds = time.perf_counter() - started
        x_train, x_test = query_vectors[train], query_vectors[test]

        nearest = np.argmax(x_test @ class_vectors.T, axis=1)
        record(f"{name}: zero-shot class name", [classes[i] for i in nearest], encode_seconds)

        for k in (1, KNN_K):
            started = time.perf_counter()
            knn = KNeighborsClassifier(n_neighbors=min(k, len(train)), metric="cosine", weights="distance")
            record(f"{name}: {k}-NN", knn.fit(x_train, y_train).predict(x_test), time.perf_counter() - started)

        started = time.perf_counter()
        c = chosen_c[f"{name}: logreg"] = _choose_c(LogisticRegression(max_iter=5000), x_train, y_train, seed)
        logreg = LogisticRegression(C=c, max_iter=5000).fit(x_train, y_train)
        record(f"{name}: logreg", logreg.predict(x_test), time.perf_counter() - started)

        # What a shop would actually deploy: its category names are free training examples, so
        # categories with few (or no) labelled queries still have a prototype. Same C as above.
        started = time.perf_counter()
        logreg_names = LogisticRegression(C=c, max_iter=5000).fit(
            np.vstack([x_train, class_vectors]), np.concatenate([y_train, np.asarray(classes, dtype=object)])
        )
        record(f"{name}: logreg + class names", logreg_names.predict(x_test), time.perf_counter() - started)

    return {
        "queries": len(data.texts),
        "dropped_without_label": data.dropped,
        "classes": len(classes),
        "train": len(train),
        "test": len(test),
        "test_classes": len(set(y_test)),
        "split": {"seed": seed, "test_fraction": test_fraction, "single_query_classes": "train"},
        "logreg_c": chosen_c,
        "methods": results,
    }


def zero_shot_label_categories(
    rows: Sequence[LabelledQuery], categories: Sequence[str], encoders: Sequence[tuple[str, Any]]
) -> dict[str, Any]:
    """Top-1 nearest catalogue category name of each labelled query that names a category:
    right when it is one of the labelled categories. Shows whether an encoder could supply the
    categories that matching cannot see, such as Chinese names of English categories."""
    named = [row for row in rows if row.categories]
    result: dict[str, Any] = {"categories": len(categories), "encoders": {}}
    for name, encoder in encoders:
        query_vectors = asyncio.run(_encode(encoder, [row.query for row in named], "query"))
        category_vectors = asyncio.run(_encode(encoder, list(categories), "query"))
        best = np.argmax(query_vectors @ category_vectors.T, axis=1)
        per_lang: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        misses = []
        for row, i in zip(named, best):
            right = categories[i] in row.categories
            for group in ("overall", row.lang):
                per_lang[group][0] += right
                per_lang[group][1] += 1
            if not right:
                misses.append({"id": row.id, "query": row.query, "expected": sorted(row.categories),
                               "got": categories[i]})
        result["encoders"][name] = {
            "accuracy": {g: {"right": r, "queries": n, "accuracy": round(r / n, 4)} for g, (r, n) in per_lang.items()},
            "misses": misses,
        }
    return result


def print_label_categories(result: dict[str, Any]) -> None:
    print(f"\nzero-shot nearest category (of {result['categories']}) for labelled queries that name one")
    rows = []
    for name, data in result["encoders"].items():
        for group, acc in data["accuracy"].items():
            rows.append([f"{name} {group}", f"{acc['right']}/{acc['queries']}", f"{acc['accuracy']:.3f}"])
    print(format_table(["encoder / group", "right", "accuracy"], rows))


# ---------------------------------------------------------------------------- output


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]])


def print_extraction(report: dict[str, Any], show_failures: int) -> None:
    rows = []
    for group, data in report["groups"].items():
        for name in FIELDS:
            f = data["fields"][name]
            rows.append([f"{group} {name}", f"{f['precision']:.3f}", f"{f['recall']:.3f}", f"{f['f1']:.3f}",
                         f["tp"], f["fp"], f["fn"]])
        rows.append([f"{group} all fields right", "", "", f"{data['all_fields_right']:.3f}", "", "",
                     f"n={data['queries']}"])
        rows.append([f"{group} language", "", "", f"{data['language_accuracy']:.3f}", "", "", ""])
    print(format_table(["group / field", "precision", "recall", "F1", "tp", "fp", "fn"], rows))
    failures = report["failures"]
    if failures and show_failures:
        shown = failures if show_failures < 0 else failures[:show_failures]
        print(f"\nqueries with a wrong field ({len(failures)}; showing {len(shown)}):")
        for failure in shown:
            problems = "; ".join(
                f"{name}: expected {_short(v['expected'])} got {_short(v['got'])}" for name, v in failure["wrong"].items()
            )
            print(f"  {failure['id']} {failure['query']!r} -> {failure['corrected']!r}: {problems}")


def _short(items: list) -> str:
    return "{" + ", ".join("=".join(map(str, i)) if isinstance(i, (tuple, list)) else str(i) for i in items) + "}"


def print_spelling(report: dict[str, Any]) -> None:
    rows = [
        ["clean queries changed (false corrections)",
         f"{report['clean_false_corrections']}/{report['queries']} = {report['clean_false_correction_rate']:.3f}"],
        [f"misspelt queries restored exactly ({report['seeds']} seeds, rate {report['rate']})",
         f"{report['restored']}/{report['misspelt_queries']} = {report['restored_rate']:.3f}"],
        ["misspelt words", str(report["misspelt_words"])],
        ["misspelt queries reported as English",
         f"{report['misspelt_detected_english']}/{report['misspelt_queries']}"],
    ]
    if report["foreign_queries"]:
        rows.append(["non-English queries changed (false corrections)",
                     f"{report['foreign_changed']}/{report['foreign_queries']}"])
    for name in FIELDS:
        rows.append([f"{name} F1 clean -> misspelt",
                     f"{report['extraction_f1_clean'][name]:.3f} -> {report['extraction_f1_misspelt'][name]:.3f}"])
    print(format_table(["spelling robustness (English)", "value"], rows))
    for example in report["false_correction_examples"][:10]:
        print(f"  false correction: {example['clean']!r} -> {example['corrected']!r}")
    for example in report["not_restored_examples"][:10]:
        print(f"  not restored: {example['clean']!r} -> {example['misspelt']!r} -> {example['corrected']!r}")
    for example in report["foreign_changed_examples"][:10]:
        print(f"  changed {example['lang']}: {example['query']!r} -> {example['corrected']!r}")


def print_classification(name: str, report: dict[str, Any]) -> None:
    print(f"\n{name}: {report['queries']} labelled queries ({report['dropped_without_label']} dropped), "
          f"{report['classes']} classes; train {report['train']}, test {report['test']} "
          f"({report['test_classes']} classes), seed {report['split']['seed']}; logistic regression C "
          "by 3-fold CV on train: " + ", ".join(f"{k} {v:g}" for k, v in report["logreg_c"].items()))
    rows = []
    for method, r in report["methods"].items():
        rows.append([method, f"{r['accuracy']:.3f} [{r['accuracy_ci95'][0]:.3f}, {r['accuracy_ci95'][1]:.3f}]",
                     f"{r['macro_f1']:.3f} [{r['macro_f1_ci95'][0]:.3f}, {r['macro_f1_ci95'][1]:.3f}]"])
    print(format_table(["method", "accuracy [95% CI]", "macro-F1 [95% CI]"], rows))


# ------------------------------------------------------------------------------ main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shelfwise eval query-understanding",
        description="Measure query understanding: extraction on labelled queries, spelling "
        "robustness, and query -> category classification on WANDS / Best Buy.",
    )
    parser.add_argument("--catalog", type=Path, default=None,
                        help="catalogue whose vocabulary is used (JSONL/CSV/Parquet; default: the demo catalogue)")
    parser.add_argument("--labels", type=Path, default=DEFAULT_LABELS,
                        help="labelled queries (JSONL; default: %(default)s)")
    parser.add_argument("--foreign", type=Path, default=DEFAULT_FOREIGN,
                        help="non-English queries (lang<TAB>query) that spelling correction must leave alone "
                             "(default: %(default)s)")
    parser.add_argument("--tasks", nargs="+", default=["extraction", "spelling", "wands"],
                        choices=["extraction", "spelling", "wands", "bestbuy", "label-categories"],
                        help="what to measure (default: extraction spelling wands); label-categories: "
                             "zero-shot nearest catalogue category of the labelled queries, per encoder")
    parser.add_argument("--data-dir", type=Path, default=shared_data_dir(),
                        help="folder holding wands/ and algolia_bestbuy/ (default: $SHELFWISE_DATA_DIR or ../shared/data)")
    parser.add_argument("--model-repository", type=Path,
                        default=model_repository())
    parser.add_argument("--encoder", action="append", dest="encoders", metavar="MODEL",
                        help=f"text encoder model(s) for classification (repeatable; default: those of "
                             f"{', '.join(ENCODER_MODELS)} present)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="split and bootstrap seed (default: %(default)s)")
    parser.add_argument("--test-fraction", type=float, default=DEFAULT_TEST_FRACTION)
    parser.add_argument("--bootstrap", type=int, default=DEFAULT_BOOTSTRAP, help="bootstrap resamples (default: %(default)s)")
    parser.add_argument("--misspell-seeds", type=int, default=DEFAULT_MISSPELL_SEEDS)
    parser.add_argument("--misspell-rate", type=float, default=1.0,
                        help="probability that a word of 4+ letters gets a typo (default: %(default)s)")
    parser.add_argument("--show-failures", type=int, default=30,
                        help="extraction failures to print (-1: all; the JSON report has all)")
    parser.add_argument("--out", type=Path, default=None, help="write the full report as JSON here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 0.0 <= args.misspell_rate <= 1.0:
        print("error: --misspell-rate must be between 0 and 1", file=sys.stderr)
        return 2
    if not 0.0 < args.test_fraction < 1.0:
        print("error: --test-fraction must be between 0 and 1", file=sys.stderr)
        return 2
    catalog = args.catalog or demo_catalog_path()
    report: dict[str, Any] = {"catalog": str(catalog), "labels": str(args.labels)}
    try:
        understander = QueryUnderstander(load_vocabulary(catalog))
        rows = read_labels(args.labels) if {"extraction", "spelling", "label-categories"} & set(args.tasks) else []
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    if "extraction" in args.tasks:
        scores = evaluate_extraction(understander, rows).as_dict()
        report["extraction"] = scores
        print(f"Extraction on {len(rows)} labelled queries ({args.labels.name}), vocabulary of {catalog.name}")
        print_extraction(scores, args.show_failures)
    if "spelling" in args.tasks:
        try:
            foreign = read_foreign_queries(args.foreign)
        except (OSError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        spelling = evaluate_spelling(understander, rows, args.misspell_seeds, args.misspell_rate, foreign)
        report["spelling"] = spelling
        print()
        print_spelling(spelling)

    wanted = [task for task in ("wands", "bestbuy", "label-categories") if task in args.tasks]
    if wanted:
        report["classification"] = {}
        encoders, notes = [], {}
        for model in args.encoders or ENCODER_MODELS:
            encoder, note = _encoder_factory(args.model_repository, model)
            notes[model] = note
            if encoder is not None:
                encoders.append((model, encoder))
            elif args.encoders:
                print(f"error: {note}", file=sys.stderr)
                return 2
        report["classification"]["encoders"] = notes
        print("\nencoders: " + "; ".join(notes.values()))
        readers = {"wands": read_wands, "bestbuy": read_bestbuy}
        if "label-categories" in wanted:
            names = sorted(set(understander.vocabulary.categories.values()))
            result = zero_shot_label_categories(rows, names, encoders)
            report["classification"]["label-categories"] = result
            print_label_categories(result)
        for task in (t for t in wanted if t in readers):
            try:
                data = readers[task](args.data_dir)
            except FileNotFoundError as error:
                print(f"\n{task}: skipped ({error.filename} is missing; set --data-dir or SHELFWISE_DATA_DIR)")
                report["classification"][task] = {"skipped": f"{error.filename} is missing"}
                continue
            result = run_classification(data, encoders, args.test_fraction, args.seed, args.bootstrap)
            report["classification"][task] = result
            print_classification(task, result)

    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        print(f"\nreport: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
