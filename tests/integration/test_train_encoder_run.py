"""A tiny real fine-tuning run of ``shelfwise train encoder`` (training.encoders.train_encoder) on a
catalogue this test writes itself: all-MiniLM-L6-v2 as the base, a handful of steps. Checks
that training lowers the contrastive loss, that the dev metric is computed before and during
training, that a run is repeatable, and that the command saves a model that embeds like the
state it reported (export is left to the real run: an ONNX export alone takes longer than
this whole file)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from training.encoders.encoder_data import judged_pairs, read_products
from training.encoders.encoder_model import load_encoder
from training.encoders.encoder_training import TrainingSettings, build_dev_set, train
from training.encoders.export import pretrained_model_path
from training.encoders.train_encoder import main

# Six shelves; the shop's department is the only category a product carries (like Instacart).
SHELVES = {
    "fruit": ("produce", ["Organic Bananas", "Honeycrisp Apples", "Seedless Red Grapes", "Bartlett Pears",
                          "Navel Oranges", "Fresh Strawberries"],
              ["fresh fruit", "sweet things that grow on trees"]),
    "dairy": ("dairy eggs", ["Whole Milk Gallon", "Greek Yogurt Plain", "Unsalted Butter Sticks",
                             "Sharp Cheddar Cheese", "Sour Cream", "Half and Half Cream"],
              ["milk and cheese", "cold products made from cow's milk"]),
    "cleaning": ("household", ["Lemon Dish Soap", "Bleach Cleaner Spray", "Kitchen Sponges 6 Pack",
                               "Glass Cleaner", "Laundry Detergent Pods", "Toilet Bowl Cleaner"],
                 ["cleaning supplies", "things to scrub the house with"]),
    "pets": ("pets", ["Dry Dog Food Chicken Recipe", "Cat Litter Clumping", "Salmon Cat Food Pate",
                      "Dog Chew Bones", "Bird Seed Mix", "Puppy Training Pads"],
             ["pet food", "what to feed your dog or cat"]),
    "baking": ("pantry", ["All Purpose Flour", "Granulated Sugar", "Baking Soda", "Pure Vanilla Extract",
                          "Semi-Sweet Chocolate Chips", "Active Dry Yeast"],
               ["baking ingredients", "what you need to make a cake"]),
    "coffee": ("beverages", ["Dark Roast Ground Coffee", "Espresso Beans Whole", "Decaf Coffee Pods",
                             "Cold Brew Coffee Concentrate", "French Roast Instant Coffee", "Colombian Medium Roast"],
               ["coffee", "something to wake me up in the morning"]),
}
TRAIN_SHELVES = ("fruit", "dairy", "cleaning", "pets")
DEV_SHELVES = ("baking", "coffee")
TINY = TrainingSettings(steps=8, batch_size=6, learning_rate=1e-4, eval_every=4, patience=3, pool_others=10,
                        max_length=24, seed=3)


def write_fixture(folder: Path) -> dict[str, Path]:
    catalog, qrels, queries = [], {"train": [], "dev": []}, {"train": [], "dev": []}
    for shelf, (department, titles, texts) in SHELVES.items():
        split = "train" if shelf in TRAIN_SHELVES else "dev"
        ids = [f"{shelf}-{n}" for n in range(len(titles))]
        catalog += [{"id": i, "title": t, "category": department, "price": 1.0} for i, t in zip(ids, titles)]
        for kind, text in zip(("name", "describe"), texts):
            queries[split].append(f"{shelf}-{kind}\t{text}")
            qrels[split] += [f"{shelf}-{kind} 0 {i} 1" for i in ids]
    paths = {"catalog": folder / "catalog.jsonl"}
    paths["catalog"].write_text("".join(json.dumps(row) + "\n" for row in catalog))
    for split in ("train", "dev"):
        paths[f"{split}_queries"] = folder / f"{split}.queries.tsv"
        paths[f"{split}_queries"].write_text("\n".join(queries[split]) + "\n")
        paths[f"{split}_qrels"] = folder / f"{split}.qrels"
        paths[f"{split}_qrels"].write_text("\n".join(qrels[split]) + "\n")
    return paths


@pytest.fixture(scope="module")
def fixture_files(tmp_path_factory) -> dict[str, Path]:
    return write_fixture(tmp_path_factory.mktemp("train-encoder"))


def _run(files: dict[str, Path], settings: TrainingSettings):
    products = read_products(files["catalog"])
    texts = {p.id: p.embedding_text() for p in products}
    data = judged_pairs([files["train_queries"]], files["train_qrels"], set(texts))
    dev = build_dev_set(products, [files["dev_queries"]], files["dev_qrels"], settings.pool_others, settings.seed)
    encoder = load_encoder(pretrained_model_path(), "", "")
    return train(encoder, data, texts, dev, settings, progress=False), dev


def test_training_lowers_the_loss_and_evaluates_dev_before_and_during_training(fixture_files) -> None:
    result, dev = _run(fixture_files, TINY)
    before, after = result.fixed_batch_loss
    # MiniLM already separates these shelves fairly well (loss about 0.1); training cuts it by
    # orders of magnitude, so halving is a safe bar that an optimizer that never steps misses.
    assert after < before / 2, f"loss on the fixed batch did not go down: {before:.4f} -> {after:.4f}"
    assert len(result.loss_history) == result.steps_run
    # The pool is every dev-relevant product plus 10 others; dev NDCG@10 at step 0, 4 and 8.
    assert len(dev.pool_ids) == 12 + 10 and dev.size == 4
    assert [step for step, _ in result.evaluations] == [0, 4, 8]
    assert all(0.0 < value <= 1.0 for _, value in result.evaluations)
    assert result.dev_before == result.evaluations[0][1]
    assert result.dev_best == max(value for _, value in result.evaluations)


def test_training_embeds_texts_like_sentence_transformers() -> None:
    # The export wraps the model in the same pooling; if training pooled differently, the
    # served model would be scored on embeddings it was never trained on.
    from sentence_transformers import SentenceTransformer

    texts = ["Organic Bananas. produce", "what to feed your dog or cat", "Half and Half Cream. dairy eggs"]
    ours = load_encoder(pretrained_model_path(), "", "").encode(texts, "passage").numpy()
    reference = SentenceTransformer(str(pretrained_model_path()), device="cpu").encode(texts, normalize_embeddings=True)
    assert abs(ours - reference).max() < 1e-5


def test_same_seed_same_run(fixture_files) -> None:
    settings = TrainingSettings(**{**TINY.__dict__, "steps": 3, "eval_every": 3})
    first, _ = _run(fixture_files, settings)
    second, _ = _run(fixture_files, settings)
    assert first.loss_history == second.loss_history
    assert first.evaluations == second.evaluations


def test_command_saves_the_best_model_and_its_report(fixture_files, tmp_path) -> None:
    argv = [
        "--catalog", str(fixture_files["catalog"]),
        "--queries", str(fixture_files["train_queries"]),
        "--qrels", str(fixture_files["train_qrels"]),
        "--dev-queries", str(fixture_files["dev_queries"]),
        "--dev-qrels", str(fixture_files["dev_qrels"]),
        "--base", "minilm", "--lora", "--steps", "6", "--batch-size", "6", "--eval-every", "3",
        "--pool-others", "10", "--max-length", "24", "--out-dir", str(tmp_path / "encoders"), "--no-export",
    ]
    assert main(argv) == 0
    (saved,) = (tmp_path / "encoders").iterdir()
    report = json.loads((saved / "training_report.json").read_text())
    assert report["settings"]["lora"] is True and report["settings"]["learning_rate"] == 5e-4
    assert report["steps_run"] == 6 and len(report["train_loss_per_step"]) == 6
    assert [e["step"] for e in report["dev_evaluations"]] == [0, 3, 6]
    assert report["dev_ndcg10_before"] == report["dev_evaluations"][0]["ndcg10"]
    # The saved directory is a plain transformers model (adapters merged), and it scores the dev
    # set exactly as the best evaluation did.
    assert (saved / "config.json").is_file() and (saved / "model.safetensors").is_file()
    assert not (saved / "adapter_config.json").exists()
    from training.encoders.encoder_training import evaluate_dev

    reloaded = load_encoder(saved, "", "")
    products = read_products(fixture_files["catalog"])
    dev = build_dev_set(products, [fixture_files["dev_queries"]], fixture_files["dev_qrels"], 10, 13)
    assert evaluate_dev(reloaded, dev) == pytest.approx(report["dev_ndcg10_after"], abs=1e-6)
    base = load_encoder(pretrained_model_path(), "", "")
    changed = any(not torch.equal(a, b) for a, b in zip(reloaded.model.state_dict().values(),
                                                         base.model.state_dict().values()))
    assert changed == (report["best_step"] > 0)
