"""Unit tests of training.search.eval_query_understanding: scoring, splits, intervals, and a small
end-to-end run over the demo catalogue that must notice a wrong label."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from training.search.eval_query_understanding import main
from training.search.query_classification import (
    LabelledTexts,
    classification_report,
    run_classification,
    stratified_split,
)
from training.search.query_extraction import read_labels


def write_labels(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(row, ensure_ascii=False) for row in rows) + "\n", encoding="utf-8")
    return path


ROWS = [
    {"id": "a", "lang": "en", "query": "red running shoes under $50", "price_min": None, "price_max": 50,
     "brands": [], "categories": ["Running Shoes"], "attributes": {"color": "red"}},
    {"id": "b", "lang": "en", "query": "Sony headphones between 20 and 50 dollars", "price_min": 20,
     "price_max": 50, "brands": ["Sony"], "categories": ["Headphones"], "attributes": {}},
    {"id": "c", "lang": "en", "query": "coffee 2 pack", "price_min": None, "price_max": None,
     "brands": [], "categories": ["Coffee"], "attributes": {}},
    {"id": "d", "lang": "zh-CN", "query": "跑鞋 300元以下", "price_min": None, "price_max": 300,
     "brands": [], "categories": [], "attributes": {}},
]


def test_end_to_end_scores_correct_labels_as_perfect(tmp_path: Path, capsys) -> None:
    labels = write_labels(tmp_path / "labels.jsonl", ROWS)
    out = tmp_path / "report.json"
    assert main(["--labels", str(labels), "--tasks", "extraction", "spelling", "--misspell-seeds", "2",
                 "--out", str(out)]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    overall = report["extraction"]["groups"]["overall"]
    assert overall["queries"] == 4
    for name in ("price", "brands", "categories", "attributes"):
        assert overall["fields"][name]["f1"] == 1.0, name
    assert overall["fields"]["price"]["tp"] == 4
    assert overall["all_fields_right"] == 1.0
    assert report["extraction"]["groups"]["zh-CN"]["language_accuracy"] == 1.0
    spelling = report["spelling"]
    assert spelling["queries"] == 3 and spelling["clean_false_corrections"] == 0
    assert 0 < spelling["misspelt_queries"] <= 6
    assert 0.0 <= spelling["restored_rate"] <= 1.0
    printed = capsys.readouterr().out
    assert "overall price" in printed and "spelling robustness" in printed


def test_end_to_end_notices_a_wrong_price_and_a_missing_category(tmp_path: Path) -> None:
    wrong = [dict(row) for row in ROWS]
    wrong[0]["price_max"] = 60  # the query says $50
    wrong[2]["categories"] = ["Coffee", "Tea"]  # "coffee 2 pack" does not name tea
    labels = write_labels(tmp_path / "labels.jsonl", wrong)
    out = tmp_path / "report.json"
    assert main(["--labels", str(labels), "--tasks", "extraction", "--out", str(out)]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    fields = report["extraction"]["groups"]["overall"]["fields"]
    assert (fields["price"]["tp"], fields["price"]["fp"], fields["price"]["fn"]) == (3, 1, 1)
    assert fields["categories"]["fn"] == 1 and fields["categories"]["recall"] < 1.0
    assert report["extraction"]["groups"]["overall"]["all_fields_right"] == 0.5
    assert {f["id"] for f in report["extraction"]["failures"]} == {"a", "c"}


def test_price_bounds_within_one_cent_count_as_right(tmp_path: Path) -> None:
    row = {**ROWS[0], "query": "running shoes under $49.99", "price_max": 49.995, "attributes": {}}
    labels = write_labels(tmp_path / "labels.jsonl", [row])
    out = tmp_path / "report.json"
    assert main(["--labels", str(labels), "--tasks", "extraction", "--out", str(out)]) == 0
    fields = json.loads(out.read_text())["extraction"]["groups"]["overall"]["fields"]
    assert fields["price"]["f1"] == 1.0


def test_bad_label_file_is_an_error_naming_the_line(tmp_path: Path, capsys) -> None:
    labels = tmp_path / "labels.jsonl"
    labels.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps({**ROWS[1], "price_max": "fifty"}) + "\n")
    with pytest.raises(ValueError, match=r"labels.jsonl:2.price_max"):
        read_labels(labels)
    assert main(["--labels", str(labels), "--tasks", "extraction"]) == 2
    assert "labels.jsonl:2" in capsys.readouterr().err


def test_stratified_split_is_seeded_keeps_singletons_in_train_and_every_test_class_in_train() -> None:
    labels = ["a"] * 10 + ["b"] * 3 + ["c"] * 2 + ["d"]
    train, test = stratified_split(labels, test_fraction=0.3, seed=1)
    assert (train, test) == stratified_split(labels, test_fraction=0.3, seed=1)
    assert sorted(train + test) == list(range(len(labels)))
    assert Counter(labels[i] for i in test) == {"a": 3, "b": 1, "c": 1}
    assert {labels[i] for i in test} <= {labels[i] for i in train}
    assert stratified_split(labels, 0.3, seed=2) != (train, test)


def test_classification_report_gives_point_estimates_inside_sane_intervals() -> None:
    truth = ["x"] * 50 + ["y"] * 50
    perfect = classification_report(truth, truth, samples=200)
    assert perfect["accuracy"] == 1.0 and perfect["macro_f1"] == 1.0
    assert perfect["accuracy_ci95"] == [1.0, 1.0]
    half = classification_report(truth, ["x"] * 100, samples=500)
    assert half["accuracy"] == 0.5
    low, high = half["accuracy_ci95"]
    assert 0.38 < low < 0.5 < high < 0.62
    assert half["macro_f1"] == pytest.approx((2 / 3 + 0) / 2, abs=1e-4)


def furniture_queries() -> LabelledTexts:
    """Three separable classes of six furniture queries each."""
    topics = {
        "Sofas": ["grey sofa", "leather sofa", "sofa bed", "velvet sofa", "small sofa", "corner sofa"],
        "Rugs": ["wool rug", "round rug", "shag rug", "runner rug", "blue rug", "outdoor rug"],
        "Lamps": ["floor lamp", "desk lamp", "table lamp", "arc lamp", "brass lamp", "lamp shade"],
    }
    return LabelledTexts("toy", [q for qs in topics.values() for q in qs], [c for c, qs in topics.items() for _ in qs], 0)


def test_lexical_classifier_beats_the_majority_class_on_separable_queries() -> None:
    data = furniture_queries()
    result = run_classification(data, encoders=[], test_fraction=0.34, seed=0, bootstrap=50)
    assert result["test"] == 6 and result["classes"] == 3
    methods = result["methods"]
    assert methods["tf-idf + logreg"]["accuracy"] == 1.0
    assert methods["majority class"]["accuracy"] < 0.5


class KeywordEncoder:
    """A stand-in text encoder: one dimension per keyword, so similarity is keyword overlap."""

    def __init__(self, keywords: list[str]) -> None:
        self.keywords = keywords
        self.kinds: list[str] = []

    async def encode(self, texts, *, kind: str, timeout: float | None = None):
        import numpy as np

        self.kinds.append(kind)
        vectors = np.array([[1.0 if k in t.lower() else 0.0 for k in self.keywords] for t in texts]) + 1e-6
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_zero_shot_label_categories_scores_top1_against_the_labelled_set(tmp_path: Path) -> None:
    from training.search.query_classification import zero_shot_label_categories

    rows = read_labels(write_labels(tmp_path / "labels.jsonl", ROWS))  # "d" names no category
    encoder = KeywordEncoder(["shoe", "headphone", "coffee"])
    result = zero_shot_label_categories(rows, ["Coffee", "Headphones", "Running Shoes"], [("kw", encoder)])
    accuracy = result["encoders"]["kw"]["accuracy"]
    assert accuracy["overall"] == {"right": 3, "queries": 3, "accuracy": 1.0}
    assert set(encoder.kinds) == {"query"}
    wrong = zero_shot_label_categories(rows, ["Coffee", "Headphones", "Tea"], [("kw", encoder)])
    assert wrong["encoders"]["kw"]["accuracy"]["overall"]["right"] == 2
    assert [m["id"] for m in wrong["encoders"]["kw"]["misses"]] == ["a"]


def test_embedding_classifiers_run_with_any_encoder_and_use_query_kind() -> None:
    data = furniture_queries()
    encoder = KeywordEncoder(["sofa", "rug", "lamp"])
    result = run_classification(data, encoders=[("kw", encoder)], test_fraction=0.34, seed=0, bootstrap=50)
    for method in ("zero-shot class name", "1-NN", "5-NN", "logreg", "logreg + class names"):
        assert result["methods"][f"kw: {method}"]["accuracy"] == 1.0, method
    assert set(encoder.kinds) == {"query"}
    assert result["logreg_c"]["kw: logreg"] in (1.0, 10.0, 100.0, 1000.0, 10000.0)
