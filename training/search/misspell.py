"""Seeded, realistic typos for robustness evaluations (`misspell`).

Both the query-understanding evaluation (does spelling correction give the clean query back?)
and the search evaluation (how much relevance do typos cost?) need misspelt queries that are
reproducible run to run and comparable between models, so the generator takes the caller's
`random.Random` and draws from it in a fixed order.

The model is the usual one for keyboard typos: each latin word of `MIN_WORD_LETTERS` letters or
more is, with probability `rate`, hit by exactly one edit, chosen uniformly from

- deletion of a letter ("shoes" -> "shes"),
- transposition of two adjacent, different letters ("shoes" -> "sheos"),
- substitution by a QWERTY neighbour of that key ("shoes" -> "shies"),
- insertion of a QWERTY neighbour of the letter next to it ("shoes" -> "shoers"),

so a misspelt word is always at Damerau-Levenshtein distance 1 from the original. The first
letter is never edited: typos there are rare (people look at the start of what they type), and
real query logs agree. Shorter words, numbers, words glued to digits ("500ml", "iphone15") and
non-latin text (Chinese) are left as they are; so is the text between words.
"""

from __future__ import annotations

import random
import re

__all__ = ["EDITS", "MIN_WORD_LETTERS", "misspell", "misspell_word"]

MIN_WORD_LETTERS = 4
EDITS = ("delete", "transpose", "substitute", "insert")

_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
# Horizontal neighbours on the same row plus the keys touching it on the rows above and below
# (a QWERTY row is offset by about half a key from the next one).
_NEIGHBOURS: dict[str, str] = {}
for _r, _row in enumerate(_ROWS):
    for _c, _key in enumerate(_row):
        _near = []
        if _c > 0:
            _near.append(_row[_c - 1])
        if _c + 1 < len(_row):
            _near.append(_row[_c + 1])
        if _r > 0:
            _near += [k for i, k in enumerate(_ROWS[_r - 1]) if i in (_c, _c + 1)]
        if _r + 1 < len(_ROWS):
            _near += [k for i, k in enumerate(_ROWS[_r + 1]) if i in (_c - 1, _c)]
        _NEIGHBOURS[_key] = "".join(sorted(set(_near)))

# A whole token of ASCII letters: not part of a longer alphanumeric token ("500ml", "iphone15",
# "t-shirt" gives "t" and "shirt"). Apostrophes split, as in the project's tokenizer.
_WORD_RE = re.compile(r"(?<![0-9A-Za-z])[A-Za-z]+(?![0-9A-Za-z])")


def _neighbour(letter: str, rng: random.Random) -> str:
    near = _NEIGHBOURS[letter.lower()]
    choice = near[rng.randrange(len(near))]
    return choice.upper() if letter.isupper() else choice


def misspell_word(word: str, rng: random.Random) -> str:
    """`word` with exactly one edit (see the module docstring). `word` is ASCII letters, at
    least two of them; the first letter stays."""
    edit = EDITS[rng.randrange(len(EDITS))]
    if edit == "transpose":
        # Swapping equal letters ("coffee": "ff") changes nothing: only positions where the two
        # letters differ qualify; a word without any falls back to a substitution.
        spots = [i for i in range(1, len(word) - 1) if word[i] != word[i + 1]]
        if spots:
            i = spots[rng.randrange(len(spots))]
            return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
        edit = "substitute"
    if edit == "delete":
        i = rng.randrange(1, len(word))
        return word[:i] + word[i + 1 :]
    if edit == "substitute":
        i = rng.randrange(1, len(word))
        return word[:i] + _neighbour(word[i], rng) + word[i + 1 :]
    # insert: a fat-fingered neighbour of the key just typed, right after it.
    i = rng.randrange(1, len(word) + 1)
    return word[:i] + _neighbour(word[i - 1], rng) + word[i:]


def misspell(text: str, rng: random.Random, rate: float = 1.0) -> str:
    """`text` with one typo in each latin word of 4+ letters, each with probability `rate`.

    Deterministic for a given `rng` state: the same seed gives the same typos. `rate` 0 returns
    `text` unchanged; 1 edits every eligible word.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be between 0 and 1, got {rate}")

    def replace(match: re.Match[str]) -> str:
        word = match.group(0)
        if len(word) < MIN_WORD_LETTERS:
            return word
        if rng.random() >= rate:
            return word
        return misspell_word(word, rng)

    return _WORD_RE.sub(replace, text)
