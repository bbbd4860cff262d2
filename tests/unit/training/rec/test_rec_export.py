"""The exported sequence model (`training.rec.rec_catalog.export_version`) served through the real
embedded ONNX Runtime: retrieval's shopper vector and item scores must be the trained model's
for a model with an untied output table (two item tables, one for history input and one to
score against). The tied default is served end to end in
`tests/integration/test_recommend_sequence_model.py`."""

from __future__ import annotations

import numpy as np
import torch

from services.common.inference import EmbeddedOnnxRuntime
from services.retrieval.personal import SequenceModel
from training.rec.rec_catalog import export_version
from training.rec.sequential_data import right_aligned
from training.rec.sequential_model import ModelConfig, SequentialRecommender

NUM_ITEMS = 12
CONTENT_DIM = 6


def trained_looking_model(untied_output: bool) -> SequentialRecommender:
    """Random weights far from initialisation (so the two tables differ)."""
    torch.manual_seed(0)
    content = np.random.default_rng(0).normal(size=(NUM_ITEMS + 1, CONTENT_DIM)).astype(np.float32)
    content[0] = 0
    config = ModelConfig(num_items=NUM_ITEMS, content_dim=CONTENT_DIM, dim=16, max_length=8, num_heads=2,
                         untied_output=untied_output)
    model = SequentialRecommender(config, content=content)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
    return model.eval()


async def test_served_scores_are_the_trained_untied_models(tmp_path):
    model = trained_looking_model(untied_output=True)
    product_ids = [f"p{item}" for item in range(1, NUM_ITEMS + 1)]
    trained_items = list(range(1, NUM_ITEMS + 1))
    export_version(model, product_ids, trained_items, "text_encoder/1", tmp_path, {"epochs": []})

    served = SequenceModel(EmbeddedOnnxRuntime(tmp_path, threads=1), "text_encoder/1")
    text = np.zeros((NUM_ITEMS, 3), np.float32)   # unused: every product was in training
    item_vectors, known = served.item_vectors(product_ids, text)
    assert known.all()
    with torch.no_grad():
        scoring = model.scoring_vectors().numpy()
        np.testing.assert_allclose(item_vectors, scoring[1:], atol=1e-6)
        history = [3, 7, 1, 9]
        expected_user = model.encode_ids(torch.from_numpy(right_aligned([history], 8)))[0].numpy()

    history_ids = [product_ids[item - 1] for item in history]
    rows = [item - 1 for item in history]
    user = await served.user_vector(served.history_vectors(history_ids, item_vectors[rows]))
    np.testing.assert_allclose(user, expected_user, atol=1e-4)
    np.testing.assert_allclose(item_vectors @ user, scoring[1:] @ expected_user, atol=1e-3)
    # The two tables really differ, so reading the wrong one would have failed above.
    assert not np.allclose(served.history_vectors(history_ids, item_vectors[rows]), item_vectors[rows])
