"""`shelfwise train ranker` as a shop runs it on its own judgments: the demo catalogue, queries
and qrels written by the test, features from the five real services, a relevance_ranker
version installed in a scratch model repository, and that version serving a Search."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

from services.ranking.relevance import RELEVANCE_FEATURES
from tests.support.models import require_export
from tests.support.paths import MODEL_REPOSITORY, ROOT

DEMO = ROOT / "services" / "local" / "demo_catalog.jsonl"
# Queries that name or describe a category of the demo catalogue; relevant = its products.
QUERIES = {
    "q1": ("red wine", "Red Wine"), "q2": ("something for a run", "Running Shoes"), "q3": ("green tea", "Tea"),
    "q4": ("coffee beans", "Coffee"), "q5": ("noise cancelling headphones", "Headphones"),
    "q6": ("a tent to sleep outdoors", "Camping Gear"), "q7": ("board games for family night", "Board Games"),
    "q8": ("dog food and cat toys", "Pet Supplies"), "q9": ("face cream", "Skincare"), "q10": ("lager", "Beer"),
}


def scratch_repository(tmp_path: Path) -> Path:
    """The exported models, linked, without a relevance ranker."""
    repository = tmp_path / "repository"
    repository.mkdir()
    for model in MODEL_REPOSITORY.iterdir():
        if model.is_dir() and model.name != "relevance_ranker":
            (repository / model.name).symlink_to(model, target_is_directory=True)
    (repository / "relevance_ranker").mkdir()
    (repository / "relevance_ranker" / "config.pbtxt").write_bytes(
        (MODEL_REPOSITORY / "relevance_ranker" / "config.pbtxt").read_bytes()
    )
    return repository


def test_train_ranker_learns_from_a_shops_judgments_and_installs_a_verified_version(tmp_path):
    require_export(MODEL_REPOSITORY / "text_encoder" / "1")
    require_export(MODEL_REPOSITORY / "text_encoder_use" / "1")
    products = [json.loads(line) for line in DEMO.read_text(encoding="utf-8").splitlines() if line.strip()]
    queries = tmp_path / "queries.tsv"
    queries.write_text("".join(f"{qid}\t{text}\n" for qid, (text, _) in QUERIES.items()), encoding="utf-8")
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("".join(
        f"{qid} 0 {p['id']} 1\n" for qid, (_, category) in QUERIES.items() for p in products if p["category"] == category
    ))
    repository = scratch_repository(tmp_path)
    completed = subprocess.run(
        [sys.executable, "-m", "services.cli", "train", "ranker", "--catalog", str(DEMO), "--queries", str(queries),
         "--qrels", str(qrels), "--model-repository", str(repository), "--cache", str(tmp_path / "cache")],
        cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "relevance_ranker version 1" in completed.stdout
    version = repository / "relevance_ranker" / "1"
    metadata = json.loads((version / "metadata.json").read_text())
    assert metadata["features"] == list(RELEVANCE_FEATURES) and metadata["queries"] == len(QUERIES)
    assert 0 < metadata["threshold"] < 1 and metadata["onnx_vs_lightgbm_max_abs_diff"] <= 1e-4
    assert metadata["encoders"] == ["text_encoder", "text_encoder_use"]
    session = ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
    [output] = session.run(["relevance"], {"features": np.zeros((3, len(RELEVANCE_FEATURES)), dtype=np.float32)})
    assert output.shape == (3, 1) and np.isfinite(output).all()
    # A second run adds the next version, never replaces the first.
    again = subprocess.run(
        [sys.executable, "-m", "services.cli", "train", "ranker", "--catalog", str(DEMO), "--queries", str(queries),
         "--qrels", str(qrels), "--model-repository", str(repository), "--cache", str(tmp_path / "cache")],
        cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=600,
    )
    assert again.returncode == 0 and (repository / "relevance_ranker" / "2" / "model.onnx").is_file()


def test_train_ranker_names_inputs_that_go_together(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "services.cli", "train", "ranker", "--catalog", str(DEMO)],
        cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 2 and "--catalog, --queries and --qrels go together" in completed.stderr
