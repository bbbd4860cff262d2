"""Query understanding: from a raw search query to what retrieval should match and filter on.

Pipeline (`QueryUnderstander.understand`):

1. validate: a non-empty string of at most `MAX_QUERY_CHARS` characters (the length is checked
   before any other work, so an oversized query costs nothing);
2. normalize (`services.common.text.normalize`);
3. spelling correction of latin words against the catalogue vocabulary; the corrected words
   are spliced back into the normalized text in place, so punctuation, prices and Chinese
   text are untouched;
4. language detection, on the normalized text *before* correction (but see `understand`: a
   query that only looked foreign because of its typos is reported as English);
5. filter extraction (price, brands, categories, attributes) on the corrected text; a price
   written in another currency than the catalogue's is converted, or dropped, with a note
   (`services.query_understanding.prices`);
6. `search_text`: the corrected text minus the price phrase and the words that only ask for
   something cheap ("cheap", "便宜": `prefers_low_price`), and its `tokens`;
7. for a Chinese query, `translation`: an English rendering of `search_text`, word by word
   through a dictionary (`services.query_understanding.translation`), which retrieval encodes
   next to the query (off with `translate=False`, e.g. for a catalogue that is not English).

The result may have an empty `search_text` ("under $50"): the caller then browses by the
filters alone. Errors are `services.common.errors.InvalidArgument` only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from services.common.errors import InvalidArgument
from services.common.text import is_latin_word, normalize_within, word_spans, words
from services.query_understanding import language as _language
from services.query_understanding.filters import extract_filters
from services.query_understanding.language import detect_language
from services.query_understanding.prices import CurrencyRates, low_price_intent, price_in_catalogue_currency
from services.query_understanding.spelling import SpellingCorrector
from services.query_understanding.translation import translate_chinese
from services.query_understanding.translation import warm_up as warm_up_translation
from services.query_understanding.vocabulary import CatalogVocabulary

__all__ = ["QueryUnderstander", "Understanding"]


@dataclass(frozen=True)
class Understanding:
    """Everything understood about one query.

    original: the query as received.
    normalized: `normalize(original)`.
    corrected: `normalized` after spelling correction.
    corrections: (original word, corrected word) pairs, in query order.
    language, language_confidence: ISO 639-1 code and confidence in [0, 1].
    price_min, price_max: price bounds found in the query (min <= max when both are set).
    brands: canonical brand names mentioned, longest match first.
    categories: (canonical category, score in (0, 1]) pairs, best first.
    attributes: attribute name -> canonical value mentioned ("color" -> "Red").
    search_text: what retrieval matches: `corrected` minus the price phrase. May be empty.
    tokens: `words(search_text)`; may be empty even when `search_text` is not ("!!!").
    translation: English rendering of a Chinese `search_text`; "" for other languages.
    prefers_low_price: the query asks for something cheap ("cheap", "affordable", "便宜").
    notes: plain-language notes on how the query was read (a converted or ignored price).
    """

    original: str
    normalized: str
    corrected: str
    corrections: tuple[tuple[str, str], ...]
    language: str
    language_confidence: float
    price_min: float | None
    price_max: float | None
    brands: tuple[str, ...]
    categories: tuple[tuple[str, float], ...]
    attributes: Mapping[str, str]
    search_text: str
    tokens: tuple[str, ...]
    translation: str = ""
    prefers_low_price: bool = False
    notes: tuple[str, ...] = ()


# Above this confidence a non-English query is left uncorrected (see `understand`).
NON_ENGLISH_CONFIDENCE = 0.9
# ... unless its corrections look like typos of English: each one edit, covering at least this
# share of its words of 4+ letters, and the corrected text reads as English.
TYPO_MAX_EDITS = 1
TYPO_MIN_WORD_SHARE = 0.5
TYPO_MIN_LETTERS = 4


class QueryUnderstander:
    """Understands queries against one catalogue vocabulary. Thread-safe; build once, share."""

    MAX_QUERY_CHARS = 512

    def __init__(
        self, vocabulary: CatalogVocabulary, translate: bool = True, currency_rates: CurrencyRates = CurrencyRates({})
    ) -> None:
        self._vocabulary = vocabulary
        self._speller = SpellingCorrector(vocabulary)
        self._translate = translate
        self._rates = currency_rates

    @property
    def vocabulary(self) -> CatalogVocabulary:
        return self._vocabulary

    def warm_up(self) -> None:
        """Load everything the first query would otherwise load (jieba's dictionary, the langid
        model, this vocabulary's SymSpell index and phrase matchers): call once at server start
        so the first real request is not slow (about 1 s, more for a large catalogue)."""
        word_spans("预热")
        _language.warm_up()
        if self._translate:
            warm_up_translation()
        self._speller.warm_up()
        self.understand("warm up 预热 under $1")

    def _validate(self, query: object) -> str:
        if not isinstance(query, str):
            raise InvalidArgument("query", f"must be a string, got {type(query).__name__}")
        if len(query) > self.MAX_QUERY_CHARS:
            raise InvalidArgument(
                "query", f"must be at most {self.MAX_QUERY_CHARS} characters, got {len(query)}"
            )
        normalized = normalize_within(query, self.MAX_QUERY_CHARS, "query")
        if not normalized:
            raise InvalidArgument("query", "must not be empty or whitespace")
        return normalized

    @staticmethod
    def _looks_like_misspelt_english(
        normalized: str, corrected: str, corrections: tuple[tuple[str, str], ...]
    ) -> bool:
        """Whether the corrections of a query detected as another language undo English typos.

        Foreign words the corrector bends to catalogue words are usually two edits away
        ("rotwein" -> "protein") or a minority of the query ("chaussures de course rouges" ->
        "routes"); typos are one edit each, and a misspelt query misspells most of its words.
        """
        from symspellpy.editdistance import DistanceAlgorithm, EditDistance

        distance = EditDistance(DistanceAlgorithm.DAMERAU_OSA)
        if any(distance.compare(a, b, TYPO_MAX_EDITS + 1) != TYPO_MAX_EDITS for a, b in corrections):
            return False
        long_words = [w for w, _, _ in word_spans(normalized) if is_latin_word(w) and len(w) >= TYPO_MIN_LETTERS]
        if len(corrections) < TYPO_MIN_WORD_SHARE * len(long_words):
            return False
        return detect_language(corrected)[0] == "en"

    def _correct(self, normalized: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        """Spell-correct the latin words of `normalized`, splicing corrections in place."""
        spans = [span for span in word_spans(normalized) if is_latin_word(span[0])]
        corrected_words, _ = self._speller.correct([word for word, _, _ in spans])
        pieces: list[str] = []
        corrections: list[tuple[str, str]] = []
        pos = 0
        for (word, start, end), fixed in zip(spans, corrected_words, strict=True):
            if fixed != word:
                pieces.append(normalized[pos:start])
                pieces.append(fixed)
                pos = end
                corrections.append((word, fixed))
        if not corrections:
            return normalized, ()
        pieces.append(normalized[pos:])
        return "".join(pieces), tuple(corrections)

    def understand(self, query: str) -> Understanding:
        """Understand one query. Raises InvalidArgument("query", ...) for empty/oversized input."""
        normalized = self._validate(query)
        language, confidence = detect_language(normalized)
        corrected, corrections = self._correct(normalized)
        # The corrector knows English words only: "rote laufschuhe unter 50" must not become
        # "route laufschuhe hunter 50", so a confident non-English detection keeps the text as
        # it is. But typos themselves make English look foreign (measured: 10% of English
        # queries with one typo per long word came out German, Danish, Polish... at >= 0.9,
        # "ktichen applianecs abpve $100" as German), so corrections that look like typos of
        # English are kept, and the query is reported as English.
        if language != "en" and confidence >= NON_ENGLISH_CONFIDENCE and corrections:
            if self._looks_like_misspelt_english(normalized, corrected, corrections):
                language, confidence = detect_language(corrected)
            else:
                corrected, corrections = normalized, ()
        extracted = extract_filters(corrected, self._vocabulary)

        price_min = price_max = None
        notes = []
        if extracted.price is not None:
            price_min, price_max, note = price_in_catalogue_currency(
                extracted.price, self._vocabulary.currency, self._rates
            )
            notes += [note] if note else []
            if price_min is not None and price_max is not None and price_min > price_max:
                price_min, price_max = price_max, price_min

        prefers_low_price, search_text = low_price_intent(extracted.remaining_text)
        translated = translate_chinese(search_text) if self._translate and language == "zh" else ""
        return Understanding(
            original=query,
            normalized=normalized,
            corrected=corrected,
            corrections=corrections,
            language=language,
            language_confidence=confidence,
            price_min=price_min,
            price_max=price_max,
            brands=tuple(extracted.brands),
            categories=tuple(extracted.categories),
            attributes=MappingProxyType(dict(extracted.attributes)),
            search_text=search_text,
            tokens=tuple(words(search_text)),
            translation=translated,
            prefers_low_price=prefers_low_price,
            notes=tuple(notes),
        )
