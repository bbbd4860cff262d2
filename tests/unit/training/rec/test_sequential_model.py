"""The sequential recommender: item vectors, the user encoder (NaN-free on short histories, the
same in any window width), full-ranking metrics on a hand-computed example, and the ONNX user
encoder against torch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from training.rec.eval_rec import evaluate_popularity
from training.rec.rec_metrics import per_user_metrics, summarize, target_ranks
from training.rec.sequential_data import EvalSet, right_aligned
from training.rec.sequential_model import (
    ModelConfig,
    SequentialRecommender,
    export_user_encoder,
    load_model,
    save_model,
)

NUM_ITEMS = 30
# Encoder variants (ModelConfig.block / positions): every one must keep the serving contract.
VARIANTS = [{}, {"block": "post"}, {"positions": "start"}, {"block": "post", "positions": "start"},
            {"untied_output": True}]


def make_model(content_dim: int = 0, **overrides) -> SequentialRecommender:
    torch.manual_seed(0)
    attributes = [[]] + [[1 + item % 4, 5 + item % 3] for item in range(1, NUM_ITEMS + 1)]
    attributes[7] = []   # an item without attributes
    content = None
    if content_dim:
        content = np.random.default_rng(0).normal(size=(NUM_ITEMS + 1, content_dim)).astype(np.float32)
        content[0] = 0
    config = ModelConfig(num_items=NUM_ITEMS, num_attributes=7, content_dim=content_dim, **overrides)
    model = SequentialRecommender(config, attributes, content)
    # Trained-looking weights: the 0.02 initial scale hides differences between code paths.
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
    return model.eval()


def test_item_vectors_have_a_zero_padding_row_and_tie_input_and_output():
    model = make_model(content_dim=5)
    vectors = model.item_vectors()
    assert vectors.shape == (NUM_ITEMS + 1, 64)
    assert torch.count_nonzero(vectors[0]) == 0
    history = torch.tensor([[0, 0, 3, 4]])
    user = model.encode_ids(history)
    manual = model.encode_history(vectors[history], (history > 0).float())
    torch.testing.assert_close(user, manual)


def test_the_scoring_table_is_the_input_table_unless_untied():
    tied = make_model(content_dim=5)
    assert tied.output_embedding is None
    torch.testing.assert_close(tied.scoring_vectors(), tied.item_vectors())

    torch.manual_seed(0)
    fresh = SequentialRecommender(ModelConfig(num_items=NUM_ITEMS, untied_output=True))
    torch.testing.assert_close(fresh.scoring_vectors(), fresh.item_vectors())   # training starts tied

    untied = make_model(content_dim=5, untied_output=True)
    scoring, inputs = untied.scoring_vectors(), untied.item_vectors()
    assert torch.count_nonzero(scoring[0]) == 0
    torch.testing.assert_close(scoring[1:] - inputs[1:], untied.output_embedding.weight[1:])
    # ID dropout drops the correction with the ID part: the side part is what a new item gets.
    keep = torch.ones(NUM_ITEMS + 1)
    keep[3] = 0
    torch.testing.assert_close(untied.scoring_vectors(keep)[3], untied.side_vectors()[3])
    torch.testing.assert_close(untied.scoring_vectors(keep)[4], scoring[4])


def test_id_dropout_leaves_the_attribute_and_content_part():
    model = make_model(content_dim=5)
    keep = torch.ones(NUM_ITEMS + 1)
    keep[3] = 0
    dropped = model.item_vectors(keep)
    full = model.item_vectors()
    torch.testing.assert_close(dropped[3], model.side_vectors()[3])
    torch.testing.assert_close(dropped[4], full[4])
    model.train()
    model.config.id_dropout = 0.5
    draws = torch.stack([model.sample_id_keep() for _ in range(200)])
    assert 0.4 < draws.mean().item() < 0.6
    model.eval()
    assert model.sample_id_keep() is None   # never at inference


def test_content_vectors_are_the_linear_projection_only():
    model = make_model(content_dim=5)
    weight, bias = model.content_projection()
    assert weight.shape == (5, 64) and bias.shape == (64,)
    features = np.random.default_rng(1).normal(size=(3, 5)).astype(np.float32)
    expected = model.content_projection_layer(torch.from_numpy(features)).detach().numpy()
    np.testing.assert_allclose(model.content_vectors(features), expected, atol=1e-5)
    with pytest.raises(ValueError, match="without content"):
        make_model().content_projection()


def test_attribute_vectors_of_new_items_match_the_side_part_of_known_items():
    model = make_model()
    vectors = model.attribute_vectors([[1 + 3 % 4, 5 + 3 % 3], [], [99]])
    np.testing.assert_allclose(vectors[0], model.side_vectors()[3].detach().numpy(), atol=1e-6)
    assert not vectors[1].any() and not vectors[2].any()


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("training", [False, True])
def test_a_history_of_one_item_or_none_gives_a_finite_user_vector(training, variant):
    model = make_model(**variant)
    model.train(training)
    vectors = model.item_vectors()
    history = torch.zeros(3, 50, dtype=torch.long)
    history[0, -1] = 5          # one item
    history[1, -2:] = torch.tensor([2, 9])
    mask = (history > 0).float()  # row 2: nothing at all
    users = model.encode_history(vectors[history], mask)
    assert torch.isfinite(users).all()
    out = model.sequence_output(vectors[history], mask)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("variant", VARIANTS)
def test_padding_and_window_width_do_not_change_the_user_vector(variant):
    model = make_model(**variant)
    histories = [[4], [1, 2, 3, 4, 5, 6, 7]]
    full = model.encode_ids(torch.from_numpy(right_aligned(histories, 50)))
    trimmed = model.encode_ids(torch.from_numpy(right_aligned(histories, 50, width=7)))
    torch.testing.assert_close(full, trimmed, atol=1e-5, rtol=1e-5)
    # What sits in padding slots never reaches the user vector.
    vectors = model.item_vectors()
    ids = torch.from_numpy(right_aligned(histories, 50))
    noisy = vectors[ids] + (ids == 0).unsqueeze(-1) * torch.randn(2, 50, 64)
    torch.testing.assert_close(model.encode_history(noisy, (ids > 0).float()), full, atol=1e-5, rtol=1e-5)


def test_metrics_match_a_hand_computed_ranking():
    # 6 items. User A: history {1, 2}, target 4. Scores: item 1 and 2 outrank everything but
    # are excluded; item 3 (0.9) and 5 (0.7, a tie with the target) remain above or level
    # -> pessimistic rank 2 (0-based), NDCG = 1/log2(4) = 0.5.
    # User B: history {5}, target 5 again -> excluded -> a miss.
    # User C: history {3}, target 6, highest score -> rank 0, NDCG 1.
    scores = torch.tensor([
        [9.0, 5.0, 5.0, 0.9, 0.7, 0.7, 0.1],
        [0.0, 0.1, 0.2, 0.3, 0.4, 0.9, 0.5],
        [9.0, 0.1, 0.2, 5.0, 0.4, 0.5, 0.9],
    ])
    split = EvalSet(np.arange(3), [[1, 2, 1], [5], [3]], np.array([4, 5, 6]))
    ranks = target_ranks(lambda index: scores[torch.from_numpy(index)], split, chunk_users=2)
    assert ranks[0] == 2 and math.isinf(ranks[1]) and ranks[2] == 0
    per_user = per_user_metrics(ranks)
    assert per_user["ndcg@10"].tolist() == pytest.approx([0.5, 0.0, 1.0])
    assert per_user["recall@10"].tolist() == [1.0, 0.0, 1.0]
    metrics = summarize(np.array([0.0, 9.0, 10.0, 19.0, 25.0]))
    assert metrics["recall@10"] == pytest.approx(2 / 5)
    assert metrics["recall@20"] == pytest.approx(4 / 5)
    assert metrics["ndcg@10"] == pytest.approx((1 + 1 / math.log2(11)) / 5)
    assert metrics["ndcg@20"] == pytest.approx((1 + 1 / math.log2(11) + 1 / math.log2(12) + 1 / math.log2(21)) / 5)


def test_popularity_ranks_by_counts_without_the_users_history():
    counts = np.array([0, 10, 8, 5, 5, 1], dtype=np.float64)
    split = EvalSet(np.arange(2), [[1], [2, 3]], np.array([4, 5]))
    result = evaluate_popularity(counts, split)
    # User 0: 2 (8) and 3 (5, tie) are >= item 4's 5 -> rank 2. User 1: 1 (10) and 4 (5) -> rank 2.
    assert result["ranks"].tolist() == [2.0, 2.0]


@pytest.mark.parametrize("variant", VARIANTS)
def test_checkpoint_round_trip_keeps_vectors_and_user_vectors(tmp_path, variant):
    model = make_model(content_dim=5, **variant)
    save_model(model, tmp_path / "model.pt")
    loaded = load_model(tmp_path / "model.pt")
    torch.testing.assert_close(loaded.item_vectors(), model.item_vectors())
    torch.testing.assert_close(loaded.scoring_vectors(), model.scoring_vectors())
    ids = torch.from_numpy(right_aligned([[1, 2, 3], [7]], 50))
    torch.testing.assert_close(loaded.encode_ids(ids), model.encode_ids(ids))


@pytest.mark.parametrize("variant", VARIANTS)
def test_onnx_user_encoder_matches_torch(tmp_path, variant):
    import onnx
    import onnxruntime as ort

    model = make_model(**variant)
    path = tmp_path / "model.onnx"
    export_user_encoder(model, path)
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["history", "history_mask"]
    assert [o.name for o in graph.output] == ["user_vector"]
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input]
    assert dims[0][1:] == [50, 64] and dims[1][1:] == [50] and isinstance(dims[0][0], str)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    vectors = model.item_vectors().detach()
    rng = np.random.default_rng(0)
    for batch in (1, 3, 17):
        for length in (1, 7, 50):
            ids = np.zeros((batch, 50), dtype=np.int64)
            ids[:, 50 - length:] = rng.integers(1, NUM_ITEMS + 1, size=(batch, length))
            history = vectors[torch.from_numpy(ids)].numpy()
            mask = (ids > 0).astype(np.float32)
            (onnx_out,) = session.run(["user_vector"], {"history": history, "history_mask": mask})
            with torch.no_grad():
                torch_out = model.encode_history(torch.from_numpy(history), torch.from_numpy(mask)).numpy()
            assert onnx_out.shape == (batch, 64)
            assert np.isfinite(onnx_out).all()
            assert np.abs(onnx_out - torch_out).max() < 1e-4, (batch, length)


def test_history_negatives_cover_each_positions_own_earlier_items_only():
    from training.rec.rec_training import history_negative_logits, softmax_loss

    table = torch.randn(NUM_ITEMS + 1, 8)
    table[0] = 0
    inputs = torch.tensor([[0, 0, 3, 4, 5], [6, 7, 8, 9, 6]])
    targets = torch.tensor([[0, 0, 4, 5, 10], [7, 8, 9, 6, 11]])
    output = torch.randn(2, 5, 8)
    logits = history_negative_logits(output, inputs, targets, table)
    finite = torch.isfinite(logits)
    # Row 0, slot 3 (input 4, target 5): its history is items 3 and 4 (slots 2, 3).
    assert finite[0, 3].tolist() == [False, False, True, True, False]
    # Row 1, slot 2 (target 9): items 6, 7, 8; slot 3 (target 6): item 6 itself is masked.
    assert finite[1, 2].tolist() == [True, True, True, False, False]
    assert finite[1, 3].tolist() == [False, True, True, True, False]
    torch.testing.assert_close(logits[0, 3, 2], output[0, 3] @ table[3])
    # Positions with no history negatives still get a finite loss.
    real = targets > 0
    loss = softmax_loss(output[real], targets[real], table, negatives=5, history_logits=logits[real])
    assert torch.isfinite(loss)
    full = softmax_loss(output[real], targets[real], table, negatives=0)
    expected = torch.nn.functional.cross_entropy(output[real] @ table[1:].T, targets[real] - 1)
    torch.testing.assert_close(full, expected)


def test_positions_from_the_start_count_from_the_oldest_item_in_the_window():
    model = make_model(positions="start")
    vectors = model.item_vectors()
    # Three items in a window of 50 sit at positions 0, 1, 2 (not 47, 48, 49): compare against
    # position ids built by hand.
    ids = torch.from_numpy(right_aligned([[3, 4, 5]], 50))
    mask = (ids > 0).float()
    expected_positions = torch.zeros(1, 50, dtype=torch.long)
    expected_positions[0, -3:] = torch.tensor([0, 1, 2])
    x = vectors[ids] * math.sqrt(64) + model.position_embedding(expected_positions)
    manual = model.final_norm(_run_blocks(model, x * mask.unsqueeze(-1), mask))[:, -1]
    torch.testing.assert_close(model.encode_history(vectors[ids], mask), manual, atol=1e-5, rtol=1e-5)


def _run_blocks(model, x, mask):
    from training.rec.sequential_model import NEG

    allowed = model.causal & ((mask[:, None, :] > 0.5) | model.diagonal)
    bias = torch.where(allowed, 0.0, NEG).unsqueeze(1)
    for block in model.blocks:
        x = block(x, bias)
    return x


def test_long_sequences_train_every_position_in_windows():
    from training.rec.sequential_data import long_sequence_windows

    seq = list(range(1, 120))
    windows = long_sequence_windows([seq, [1, 2, 3]], 50)
    assert all(len(w) <= 51 for w in windows)
    targets = sorted(t for w in windows[:-1] for t in w[1:])
    assert targets == seq[1:]          # every next-item target once
    assert windows[-1] == [1, 2, 3]    # short sequences unchanged
