"""`shelfwise eval search` as a shop runs it on its own judgments: a catalogue file, TSV
queries and TREC qrels written by the test, several pipelines side by side, in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.support.models import require_export
from tests.support.paths import MODEL_REPOSITORY, ROOT

PRODUCTS = [
    # Fruit that never says "fruit": only a semantic match finds it for "fresh fruit".
    ("p1", "Bananas, bunch of six", "produce"),
    ("p2", "Honeycrisp Apples", "produce"),
    ("p3", "Organic Bartlett Pears", "produce"),
    ("p4", "Seedless Red Grapes", "produce"),
    ("p5", "Aged Cheddar Block", "dairy"),
    ("p6", "Fresh Mozzarella Ball", "dairy"),
    ("p7", "Lemon Dish Soap", "household"),
    ("p8", "Fresh Scent Laundry Detergent", "household"),
    ("p9", "Paper Towels, 6 rolls", "household"),
    ("p10", "Fruit Flavored Gummy Snacks", "snacks"),
]


def write_fixture(tmp_path):
    catalog = tmp_path / "shop.jsonl"
    catalog.write_text(
        "\n".join(json.dumps({"id": i, "title": t, "category": c, "price": 1.0}) for i, t, c in PRODUCTS) + "\n",
        encoding="utf-8",
    )
    queries = tmp_path / "judged.tsv"
    queries.write_text("q1\tfresh fruit\nq2\tcheddar\nq3\tunjudged query\n", encoding="utf-8")
    qrels = tmp_path / "judged.qrels"
    qrels.write_text("".join(f"q1 0 {p} 1\n" for p in ("p1", "p2", "p3", "p4")) + "q2 0 p5 1\n")
    return catalog, queries, qrels


def run_eval(tmp_path, *args):
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "eval", "search", *args,
         "--model-repository", str(MODEL_REPOSITORY), "--cache", str(tmp_path / "cache")],
        cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=600,
    )


def test_eval_search_compares_pipelines_on_a_shops_own_judgments(tmp_path):
    require_export(MODEL_REPOSITORY / "text_encoder" / "1")
    catalog, queries, qrels = write_fixture(tmp_path)
    report_path = tmp_path / "report.json"
    completed = run_eval(
        tmp_path, "--catalog", str(catalog), "--queries", str(queries), "--qrels", str(qrels),
        "--pipeline", "bm25", "--pipeline", "dense-zeroshot", "--out", str(report_path),
        "--plot", str(tmp_path / "report.png"),
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "1 queries have no judgments and are skipped" in completed.stderr
    assert "NDCG@10" in completed.stdout and "dense-zeroshot" in completed.stdout
    report = json.loads(report_path.read_text())
    rows = {row["pipeline"]: row for row in report["rows"] if row["language"] == "all"}
    assert rows["bm25"]["queries"] == 2
    # "cheddar" is a lexical hit; "fresh fruit" lexically finds only the wrong products
    # (detergent, gummies), while the encoder finds the fruit.
    assert rows["dense-zeroshot"]["NDCG@10"]["mean"] > rows["bm25"]["NDCG@10"]["mean"]
    low, high = rows["bm25"]["NDCG@10"]["ci95"]
    assert low <= rows["bm25"]["NDCG@10"]["mean"] <= high
    assert (tmp_path / "report.png").stat().st_size > 0


def test_eval_search_says_what_is_wrong_with_a_bad_input_file(tmp_path):
    catalog, queries, qrels = write_fixture(tmp_path)
    qrels.write_text("q1 p1 1\n")
    completed = run_eval(tmp_path, "--catalog", str(catalog), "--queries", str(queries), "--qrels", str(qrels),
                         "--pipeline", "bm25")
    assert completed.returncode == 2
    assert "judged.qrels:1: expected 'qid 0 docid grade'" in completed.stderr
