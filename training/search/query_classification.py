"""Query classification for `shelfwise eval query-understanding` (and the query-category
evaluation): category labels from WANDS and Best Buy, a stratified split, accuracy and macro-F1
with bootstrap intervals, and the classifiers compared (TF-IDF and encoder logistic regression,
k-NN, zero-shot labelling)."""

from __future__ import annotations

import asyncio
import csv
import inspect
import json
import os
import random
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.search.query_extraction import LabelledQuery
from training.stats import percentile_interval, resampled_indices

DEFAULT_SEED = 13


DEFAULT_TEST_FRACTION = 0.3


DEFAULT_BOOTSTRAP = 2000


ENCODER_MODELS = ("text_encoder", "text_encoder_multilingual")


# Logistic regression's C is chosen by 3-fold cross-validation on the training split only
# (never the test split). One fixed C does not suit every encoder: e5 embeddings all lie in a
# narrow cone (cosines 0.7-0.9), so at C=10 they were badly underfit while MiniLM's were not.
LOGREG_CS = (1.0, 10.0, 100.0, 1000.0, 10000.0)


CV_FOLDS = 3


KNN_K = 5


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


def encoder_factory(repository: Path, model: str):
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


async def encode_texts(encoder, texts: Sequence[str], kind: str) -> np.ndarray:
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
        query_vectors = asyncio.run(encode_texts(encoder, data.texts, "query"))
        class_vectors = asyncio.run(encode_texts(encoder, classes, "query"))
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
        query_vectors = asyncio.run(encode_texts(encoder, [row.query for row in named], "query"))
        category_vectors = asyncio.run(encode_texts(encoder, list(categories), "query"))
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
