"""Shopper vectors and item vectors for personal retrieval, and the history events return."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from services.events.queries import HistoryEntry, collapse_history
from services.retrieval.personal import (
    ItemTable,
    SequenceModel,
    cosine,
    MAX_INTERESTS,
    RECENCY_DECAY,
    relative_probability,
    text_history_interests,
    text_history_logits,
)
from services.retrieval.dense import DenseIndex


def test_text_history_keeps_the_most_recent_interests_with_recency_log_weights() -> None:
    vectors = np.eye(32, dtype=np.float32)[:25]
    interests, log_weights = text_history_interests(vectors)
    assert len(interests) == MAX_INTERESTS
    np.testing.assert_array_equal(interests[-1], vectors[-1])
    assert log_weights[-1] == 0.0
    assert log_weights[-2] == pytest.approx(np.log(RECENCY_DECAY))


def _unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def test_text_history_mixture_prefers_either_interest_to_what_lies_between_them() -> None:
    shoes, tea = _unit(1, 0, 0), _unit(0, 1, 0)
    interests, log_weights = text_history_interests(np.stack([shoes, tea]))
    # The mean of shoes and tea is nearest to `between`; the shopper wants shoes or tea.
    candidates = np.stack([_unit(0.1, 1, 0), _unit(1, 0.1, 0), _unit(1, 1, 0.3)])
    logits = text_history_logits(interests, log_weights, candidates)
    assert logits[0] > logits[1] > logits[2]  # tea (latest) > shoes (older) > between


def test_search_many_returns_each_querys_nearest_among_allowed_slots() -> None:
    index = DenseIndex(3)
    index.add(np.stack([_unit(1, 0, 0), _unit(0.9, 0.1, 0), _unit(0, 1, 0), _unit(0, 0.9, 0.1), _unit(0, 0, 1)]))
    allowed = np.array([True, False, True, True, True])
    slots = index.search_many(np.stack([_unit(1, 0, 0), _unit(0, 1, 0)]), 1, allowed)
    assert sorted(slots.tolist()) == [0, 2]
    assert index.search_many(np.zeros((0, 3), np.float32), 1, allowed).tolist() == []


def test_cosine_is_zero_for_zero_rows() -> None:
    scores = cosine(np.array([1.0, 0.0], np.float32), np.array([[2.0, 0.0], [0.0, 0.0], [-1.0, 0.0]], np.float32))
    np.testing.assert_allclose(scores, [1.0, 0.0, -1.0])


def test_relative_probability_is_one_for_the_best_keeps_the_order_and_ignores_unknown_rows() -> None:
    logits = np.array([2.0, 5.0, 4.0, 9.0], dtype=np.float32)
    known = np.array([True, True, True, False])
    affinity = relative_probability(logits, known)
    np.testing.assert_allclose(affinity, [np.exp(-3.0), 1.0, np.exp(-1.0), 0.0], rtol=1e-6)
    assert relative_probability(logits, np.zeros(4, dtype=bool)).tolist() == [0.0] * 4


def test_history_runs_of_one_product_become_one_step_of_the_strongest_type() -> None:
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    events = [("a", "click"), ("b", "click"), ("b", "add_to_cart"), ("b", "purchase"), ("a", "click"), ("c", "click")]
    newest_first = [HistoryEntry(p, t, start + timedelta(minutes=i)) for i, (p, t) in enumerate(events)][::-1]
    steps = collapse_history(newest_first, limit=10)
    assert [(s.product_id, s.type) for s in steps] == [("a", "click"), ("b", "purchase"), ("a", "click"), ("c", "click")]
    assert steps[1].occurred_at == start + timedelta(minutes=3)
    assert [s.product_id for s in collapse_history(newest_first, limit=2)] == ["a", "c"]


class RecordingBackend:
    """An inference backend over a real version folder whose encoder returns the mean of the
    unmasked history vectors (enough to check what the service sends)."""

    def __init__(self, repository):
        from services.common.inference import ModelVersion

        self._version = ModelVersion("user_sequence_encoder", 4, repository / "user_sequence_encoder" / "4" / "model.onnx")
        self.sent = []

    def has_model(self, name):
        return name == "user_sequence_encoder"

    def model_version(self, name):
        return self._version

    async def infer(self, name, inputs, outputs, timeout=None):
        self.sent.append(inputs)
        mask = inputs["history_mask"][..., None]
        return {"user_vector": (inputs["history"] * mask).sum(axis=1) / mask.sum(axis=1)}


@pytest.fixture
def sequence_repository(tmp_path):
    folder = tmp_path / "user_sequence_encoder" / "4"
    folder.mkdir(parents=True)
    np.savez(
        folder / "items.npz",
        product_ids=np.array(["p1", "p2"]),
        vectors=np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], np.float32),
        content_weight=np.array([[0.0, 0.0, 2.0], [0.0, 0.0, 0.0]], np.float32),
        content_bias=np.array([0.0, 0.0, 0.5], np.float32),
    )
    (folder / "metadata.json").write_text(json.dumps({"max_length": 3, "dim": 3, "text_encoder": "text_encoder/1"}))
    return tmp_path


def test_item_table_reads_the_exported_files(sequence_repository) -> None:
    table = ItemTable.read(sequence_repository / "user_sequence_encoder" / "4")
    assert table.product_ids == ("p1", "p2") and table.dimension == 3 and table.max_length == 3
    # An export without `history_vectors` (a tied model's, before the array existed): one table.
    np.testing.assert_array_equal(table.history_vectors, table.vectors)


def _add_history_vectors(repository, history_vectors: np.ndarray) -> None:
    path = repository / "user_sequence_encoder" / "4" / "items.npz"
    with np.load(path) as data:
        arrays = dict(data)
    np.savez(path, **arrays, history_vectors=history_vectors)


def test_an_untied_model_reads_trained_histories_from_its_own_table(sequence_repository) -> None:
    _add_history_vectors(sequence_repository, np.array([[0.0, 0.0, 7.0], [0.0, 8.0, 0.0]], np.float32))
    model = SequenceModel(RecordingBackend(sequence_repository), "text_encoder/1")
    vectors, _ = model.item_vectors(["p1", "new"], np.array([[0.0, 0.0], [0.5, 0.0]], np.float32))
    np.testing.assert_allclose(vectors, [[1.0, 0.0, 0.0], [0.0, 0.0, 1.5]])   # scored against these
    inputs = model.history_vectors(["p1", "new"], vectors)
    # p1 is read from history_vectors; the new product's projected text vector serves both ends.
    np.testing.assert_allclose(inputs, [[0.0, 0.0, 7.0], [0.0, 0.0, 1.5]])
    np.testing.assert_allclose(vectors[0], [1.0, 0.0, 0.0])   # the caller's array is left alone


def test_an_export_whose_two_tables_disagree_is_refused(sequence_repository) -> None:
    _add_history_vectors(sequence_repository, np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match="history_vectors .* differ in shape"):
        ItemTable.read(sequence_repository / "user_sequence_encoder" / "4")


def test_products_new_since_training_get_projected_text_vectors_when_the_encoder_matches(sequence_repository) -> None:
    model = SequenceModel(RecordingBackend(sequence_repository), "text_encoder/1")
    text = np.array([[0.3, 0.7], [1.0, 0.0]], np.float32)
    vectors, known = model.item_vectors(["p2", "new"], text)
    np.testing.assert_allclose(vectors, [[0.0, 1.0, 0.0], [0.0, 0.0, 2.5]])
    assert known.tolist() == [True, True]


def test_with_another_text_encoder_new_products_get_no_item_vector(sequence_repository) -> None:
    model = SequenceModel(RecordingBackend(sequence_repository), "text_encoder_multilingual/3")
    vectors, known = model.item_vectors(["p1", "new"], np.ones((2, 2), np.float32))
    assert known.tolist() == [True, False]
    assert not vectors[1].any()


async def test_user_vector_sends_the_most_recent_steps_right_aligned(sequence_repository) -> None:
    backend = RecordingBackend(sequence_repository)
    model = SequenceModel(backend, "text_encoder/1")
    history = np.arange(4 * 3, dtype=np.float32).reshape(4, 3)
    await model.user_vector(history[:2])
    sent = backend.sent[-1]
    np.testing.assert_array_equal(sent["history_mask"], [[0.0, 1.0, 1.0]])
    np.testing.assert_array_equal(sent["history"][0, 1:], history[:2])
    assert not sent["history"][0, 0].any()
    await model.user_vector(history)
    np.testing.assert_array_equal(backend.sent[-1]["history"][0], history[1:])
