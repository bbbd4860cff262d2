"""Unit tests of training.encoders.train_encoder's pure parts: which in-batch products are masked out of
a query's negatives, the loss with that mask, the batch sampler, and the refusal of test-split
files (no model is loaded here; the training run itself is in tests/integration)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from training.encoders.encoder_data import (
    HeldOutSplitError,
    JudgedQuery,
    PairData,
    mine_hard_negatives,
    refuse_test_files,
    says_test,
)
from training.encoders.encoder_training import Batch, BatchSampler, false_negative_mask, info_nce
from training.encoders.train_encoder import main, next_version

# Two queries about fruit (same relevant products), one about dairy, one about cleaning.
RELEVANT = {
    "fruit-name": frozenset({"banana", "apple", "pear"}),
    "fruit-describe": frozenset({"banana", "apple", "pear"}),
    "dairy-name": frozenset({"milk", "yogurt"}),
    "cleaning-name": frozenset({"bleach", "sponge", "apple"}),  # an odd judgment: apple also counts here
}
QUERIES = [
    JudgedQuery("fruit-name", "fresh fruits", "en"),
    JudgedQuery("fruit-describe", "sweet things that grow on trees", "en"),
    JudgedQuery("dairy-name", "milk and yogurt", "en"),
    JudgedQuery("cleaning-name", "cleaning supplies", "en"),
]


def test_products_relevant_to_another_query_are_masked_out_of_its_negatives() -> None:
    batch = Batch(QUERIES, ["banana", "apple", "milk", "bleach"])
    mask = false_negative_mask(batch, RELEVANT)
    expected = torch.tensor(
        [
            # banana  apple  milk   bleach
            [False, True, False, False],  # fruit-name: apple (fruit-describe's positive) is relevant too
            [True, False, False, False],  # fruit-describe: banana is relevant too
            [False, False, False, False],  # dairy: every other product is a true negative
            [False, True, False, False],  # cleaning: the apple judged relevant here is not a negative
        ]
    )
    assert torch.equal(mask, expected)


def test_the_same_product_drawn_twice_is_not_a_negative_of_either_query() -> None:
    batch = Batch(QUERIES[:3], ["apple", "apple", "milk"])
    mask = false_negative_mask(batch, RELEVANT)
    assert mask[0, 1] and mask[1, 0]
    assert not mask[0, 0] and not mask[1, 1], "a query's own positive must never be masked"


def test_masked_columns_do_not_contribute_to_the_loss() -> None:
    torch.manual_seed(0)
    queries = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    passages = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    # Passage 2 is as close to query 0 as a relevant product would be: unmasked, it dominates.
    passages[2] = queries[0]
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[0, 2] = True
    masked = info_nce(queries, passages, mask, temperature=0.05)
    # By hand: row 0 without column 2, the other rows over every column.
    logits = queries @ passages.T / 0.05
    rows = [torch.logsumexp(logits[0, [0, 1, 3]], 0) - logits[0, 0]]
    rows += [torch.logsumexp(logits[i], 0) - logits[i, i] for i in (1, 2, 3)]
    assert math.isclose(float(masked), float(torch.stack(rows).mean()), rel_tol=1e-5)
    assert float(info_nce(queries, passages, torch.zeros_like(mask), 0.05)) > float(masked) + 0.1


def test_sampler_batches_hold_distinct_queries_with_a_relevant_product_and_cover_every_query() -> None:
    data = PairData(QUERIES, RELEVANT)
    sampler = BatchSampler(data, batch_size=3, seed=1)
    seen = []
    for _ in range(8):
        batch = sampler.next_batch()
        qids = [q.qid for q in batch.queries]
        assert len(set(qids)) == 3, f"a query repeated within one batch: {qids}"
        for query, product in zip(batch.queries, batch.product_ids):
            assert product in RELEVANT[query.qid]
        seen += qids
    # 24 draws over 4 queries, each query once per pass: 6 each.
    assert {qid: seen.count(qid) for qid in RELEVANT} == {qid: 6 for qid in RELEVANT}


def test_sampler_is_repeatable_with_the_same_seed() -> None:
    first = [BatchSampler(PairData(QUERIES, RELEVANT), 2, seed=5).next_batch() for _ in range(1)]
    second = [BatchSampler(PairData(QUERIES, RELEVANT), 2, seed=5).next_batch() for _ in range(1)]
    assert first == second


@pytest.mark.parametrize(
    "name", ["test.qrels", "test.en.queries.tsv", "my_test_queries.tsv", "instacart-test.qrels", "TestSet.tsv"]
)
def test_files_named_test_are_recognised(name: str) -> None:
    assert says_test(Path("some/dir") / name)


@pytest.mark.parametrize("name", ["train.qrels", "dev.zh.queries.tsv", "latest.qrels", "contest.tsv"])
def test_other_files_are_not_taken_for_test_files(name: str) -> None:
    # Only the file name counts: pytest's own temporary folders are named test_*.
    assert not says_test(Path("/tmp/pytest-of-x/test_something0") / name)


def test_refusal_names_every_test_file_and_can_be_overridden() -> None:
    with pytest.raises(HeldOutSplitError, match=r"test\.qrels.*test\.en\.queries\.tsv|test\.en\.queries\.tsv.*test\.qrels"):
        refuse_test_files([Path("b/test.en.queries.tsv"), Path("b/test.qrels"), Path("b/dev.qrels")], allow_test=False)
    refuse_test_files([Path("b/test.qrels")], allow_test=True)
    refuse_test_files([Path("b/train.qrels"), None], allow_test=False)


def _write_inputs(folder: Path, queries_name: str, qrels_name: str) -> list[str]:
    catalog = folder / "catalog.jsonl"
    catalog.write_text('{"id": "p1", "title": "Bananas", "price": 1}\n{"id": "p2", "title": "Milk", "price": 1}\n')
    (folder / queries_name).write_text("q1\tfruit\n")
    (folder / qrels_name).write_text("q1 0 p1 1\n")
    return ["--catalog", str(catalog), "--queries", str(folder / queries_name), "--qrels", str(folder / qrels_name)]


def test_command_refuses_test_split_training_files_before_loading_anything(tmp_path, capsys) -> None:
    argv = _write_inputs(tmp_path, "test.en.queries.tsv", "test.qrels")
    assert main(argv + ["--base", str(tmp_path / "no-model-here"), "--no-export"]) == 2
    error = capsys.readouterr().err
    assert "test.qrels" in error and "test.en.queries.tsv" in error and "--allow-test" in error


def test_command_refuses_a_test_split_used_for_early_stopping(tmp_path, capsys) -> None:
    argv = _write_inputs(tmp_path, "train.queries.tsv", "train.qrels")
    (tmp_path / "test.qrels").write_text("q1 0 p2 1\n")
    argv += ["--dev-queries", str(tmp_path / "train.queries.tsv"), "--dev-qrels", str(tmp_path / "test.qrels")]
    assert main(argv + ["--no-export"]) == 2
    assert "test.qrels" in capsys.readouterr().err


def test_allow_test_lets_the_file_through_to_the_next_check(tmp_path, capsys) -> None:
    argv = _write_inputs(tmp_path, "test.en.queries.tsv", "test.qrels")
    # Past the refusal, the (missing) base model is the next thing to fail.
    assert main(argv + ["--allow-test", "--base", str(tmp_path / "no-model-here"), "--no-export"]) == 2
    error = capsys.readouterr().err
    assert "refusing" not in error and "no-model-here" in error


def test_next_version_follows_the_highest_existing_version(tmp_path) -> None:
    assert next_version(tmp_path, "text_encoder_multilingual") == 2
    (tmp_path / "text_encoder_multilingual" / "1").mkdir(parents=True)
    assert next_version(tmp_path, "text_encoder_multilingual") == 2
    (tmp_path / "text_encoder_multilingual" / "3").mkdir()
    (tmp_path / "text_encoder_multilingual" / ".export-v4-tmp").mkdir()
    assert next_version(tmp_path, "text_encoder_multilingual") == 4


def test_hard_negatives_follow_the_positives_and_relevant_ones_are_masked() -> None:
    data = PairData(QUERIES[2:], {q.qid: RELEVANT[q.qid] for q in QUERIES[2:]},
                    hard_negatives={"dairy-name": ["oat milk"], "cleaning-name": ["milk"]})
    batch = BatchSampler(data, batch_size=2, seed=1, hard_negatives=1).next_batch()
    assert len(batch.product_ids) == 4
    positives, negatives = batch.product_ids[:2], batch.product_ids[2:]
    for query, positive in zip(batch.queries, positives):
        assert positive in RELEVANT[query.qid]
    assert sorted(negatives) == ["milk", "oat milk"]
    mask = false_negative_mask(batch, RELEVANT)
    assert mask.shape == (2, 4)
    dairy = [q.qid for q in batch.queries].index("dairy-name")
    # "milk", mined as a look-alike for the cleaning query, is relevant to the dairy query.
    assert mask[dairy, 2 + negatives.index("milk")]
    assert not mask[dairy, 2 + negatives.index("oat milk")]
    loss = info_nce(torch.eye(2, 4), torch.eye(4), mask, temperature=0.05)
    assert torch.isfinite(loss)


def test_mined_hard_negatives_are_lexical_look_alikes_the_qrels_do_not_judge_relevant() -> None:
    from services.retrieval.catalog import Product

    products = [Product(id=i, title=t, price=1.0) for i, t in (
        ("b1", "Pale Ale Beer"), ("b2", "Lager Beer"), ("r1", "Root Beer Soda"), ("g1", "Ginger Beer"), ("x", "Dish Soap"))]
    query = JudgedQuery("beer", "beer", "en")
    data = PairData([query], {"beer": frozenset({"b1", "b2"})})
    mined = mine_hard_negatives(data, products)
    assert set(mined["beer"]) == {"r1", "g1"}
