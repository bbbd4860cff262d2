"""Spelling correction of query words against the catalogue's vocabulary (SymSpell).

Only words that could plausibly be typos of a catalogue word are touched. A word is left alone
when it is in the catalogue; when it is a number, contains a digit or `$`, or is not made of
latin letters (Chinese, Cyrillic, ...); when it has 3 letters or fewer (too little signal: "tee"
vs "tea"); when it is a common English word; or when it has the same English stem as a catalogue
word ("shoe" with "shoes" in the catalogue, "runs" with "running"): BM25 matches stems, so such a
word already finds its products. The last rule matters: a shopper's "something to
drink" must not become "soothing to drinks" just because the catalogue lacks "something".

A misspelt word of 4-5 letters may be corrected by one edit, a longer one by up to two. Among the
closest candidates the most frequent catalogue word wins (ties: alphabetical, so results are
deterministic). The words of price phrases (`filters.PRICE_WORDS`: "under", "dollars", ...) are
candidates too, ahead of catalogue words: a shopper's "dollasr" is "dollars", not the
catalogue's "collar", and the price filter depends on it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from services.common.text import is_latin_word, stem
from services.query_understanding.lexicon import english_words
from services.query_understanding.price_phrases import PRICE_WORDS
from services.query_understanding.vocabulary import CatalogVocabulary

__all__ = ["COMMON_ENGLISH_WORDS", "SpellingCorrector"]

MIN_CORRECTABLE_LENGTH = 4
# Longer "words" are codes, URLs or junk; correcting them is pointless and only costs time.
MAX_CORRECTABLE_LENGTH = 30
MAX_EDIT_DISTANCE = 2

# Frequent English words and common shopping vocabulary: never "corrected", even when the
# catalogue does not contain them. Words of 3 letters or fewer are never corrected anyway.
COMMON_ENGLISH_WORDS: frozenset[str] = frozenset(
    """
    about above accessories across actually adult adults after again against ago almost alone
    along already also although always among anniversary another answer anybody anyone anything
    anyway anywhere appear around away babies baby back basic basics because become been before
    began begin behind being believe below best better between birthday black blue both bought
    boys brand brands breakfast bright bring brought brown bucks budget build built bulk
    business came cannot care carry case cause certain change cheap cheaper cheapest child
    children christmas city classic clean close clothes clothing cold color colors colour
    colours come comfortable comfy coming common cooking cool cost costs could country course
    create cute daily dark daughter deal deals dear decide delivery dinner discount does doing
    dollar dollars done down drink drinking drinks durable during each early easter easy eating
    either elegant else enough euro euros even ever every everyday everyone everything example
    expensive extra face fact family fancy fast father favorite favourite feel find first five
    follow following food form found four free fresh friend friends from full gave gift gifts
    girl girls give given goes going gold gone good gray great green grey group grow guys half
    hand happen hard have having head healthy hear heard heavy help here high hold holiday
    holidays home house however husband idea important include into item items just keep kids
    kind kitchen knew know known ladies lady large last late later latest learn least leave left
    less life light lightweight like line list little live local long look looking lunch luxury
    made make making many maybe meal meals mean medium mens might mind modern moms more most
    mother move much mums must myself name near need needs never next nice night nothing number
    offer office often once only open orange order other others outdoor outdoors over pack pair
    pairs part parties party people perfect perhaps person pink place play please plus point
    popular possible premium present presents pretty price priced prices pricey problem provide
    purple quality question quick quite rated rather read ready real really reason remember
    review reviews right room said sale sales same seem seen sell send serve several shall
    shipping short should show side simple since sister size sizes slim small snack snacks soft
    some someone something sometimes soon sort special sport sports start state stay still stock
    stop story style such summer super sure sweet take taking talk teen teens tell than thank
    thanks that their them then there these they thin thing things think this those though
    thought three through time tiny today together told took toward town travel trendy true turn
    under unisex until upon used useful using usually very vintage want wanted warm wear wearing
    wedding week weekend well went were what whatever when where whether which while whole whose
    wife will winter wish with within without woman women womens word work world would write
    year years yellow young your yours
    """.split()
)


class SpellingCorrector:
    """Corrects query words towards the words of one catalogue vocabulary.

    The SymSpell index is built on the first call to `correct` (a few thousand words: tens of
    milliseconds), then each lookup takes microseconds. Thread-safe.
    """

    def __init__(self, vocabulary: CatalogVocabulary) -> None:
        self._vocabulary = vocabulary
        self._symspell: object | None = None
        self._stems: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    @property
    def vocabulary(self) -> CatalogVocabulary:
        return self._vocabulary

    def _index(self):  # -> symspellpy.SymSpell
        if self._symspell is None:
            with self._lock:
                if self._symspell is None:
                    from symspellpy import SymSpell

                    symspell = SymSpell(max_dictionary_edit_distance=MAX_EDIT_DISTANCE)
                    stems: set[str] = set()
                    for word, count in self._vocabulary.word_counts.items():
                        if len(word) >= 2 and count > 0 and is_latin_word(word):
                            symspell.create_dictionary_entry(word, count)
                            stems.add(stem(word))
                    # Query grammar outranks any catalogue word at the same edit distance.
                    top = max(self._vocabulary.word_counts.values(), default=0) + 1
                    for word in PRICE_WORDS:
                        symspell.create_dictionary_entry(word, top)
                    self._stems = frozenset(stems)
                    self._symspell = symspell
        return self._symspell

    def warm_up(self) -> None:
        """Build the SymSpell index now rather than on the first query."""
        self._index()
        english_words()

    def is_correctable(self, word: str) -> bool:
        """Whether `word` is a candidate for correction at all (see the module docstring)."""
        return (
            MIN_CORRECTABLE_LENGTH <= len(word) <= MAX_CORRECTABLE_LENGTH
            and is_latin_word(word)
            and word not in self._vocabulary.word_counts
            and word not in COMMON_ENGLISH_WORDS
            and word not in english_words()
        )

    def suggest(self, word: str) -> str | None:
        """The catalogue word `word` should become, or None to leave it as it is."""
        if not self.is_correctable(word):
            return None
        from symspellpy import Verbosity

        index = self._index()
        if stem(word) in self._stems:
            return None
        max_distance = 1 if len(word) <= 5 else MAX_EDIT_DISTANCE
        suggestions = index.lookup(word, Verbosity.CLOSEST, max_edit_distance=max_distance)
        if not suggestions:
            return None
        best = min(suggestions, key=lambda s: (s.distance, -s.count, s.term))
        return best.term if best.term != word and best.distance > 0 else None

    def correct(self, words: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
        """Correct each word; returns the corrected words and the (original, corrected) pairs.

        The output list has the same length and order as `words`. Words are expected to be
        normalized (lower-case), e.g. from `services.common.text.words`.
        """
        corrected: list[str] = []
        pairs: list[tuple[str, str]] = []
        for word in words:
            suggestion = self.suggest(word)
            if suggestion is None:
                corrected.append(word)
            else:
                corrected.append(suggestion)
                pairs.append((word, suggestion))
        return corrected, pairs
