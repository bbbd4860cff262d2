"""Frequent English words, from the frequency dictionary that ships with symspellpy.

A shopper's word that is a real English word ("steak", "lover") is not a typo, even when the
catalogue lacks it; without this list the spelling corrector turned "steak" into "steam" and
"lover" into "over". Only words seen at least MIN_COUNT times in that corpus count, so rare
spellings ("shoos") can still be corrected towards the catalogue.
"""

from __future__ import annotations

import functools
from importlib import resources

MIN_COUNT = 1_000_000


@functools.cache
def english_words() -> frozenset[str]:
    text = (resources.files("symspellpy") / "frequency_dictionary_en_82_765.txt").read_text(encoding="utf-8")
    frequent = set()
    for line in text.splitlines():
        word, _, count = line.partition(" ")
        if count and int(count) >= MIN_COUNT:
            frequent.add(word)
    return frozenset(frequent)
