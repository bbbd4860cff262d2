"""Property-based tests (hypothesis) of query understanding on any text a caller can send.

Whatever the text (arbitrary Unicode, control characters, lone surrogates, huge or negative
numbers, "under 1e309"), `QueryUnderstander.understand` either raises InvalidArgument naming
`query` or returns an understanding whose fields are normalised and bounded: price bounds
finite, non-negative and ordered, scores in range, tokens drawn from the search text. The
vocabulary is the demo catalogue's, so brands, categories, attributes and spelling are live.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from services.common.errors import InvalidArgument
from services.common.text import normalize, words
from services.query_understanding.price_phrases import extract_price
from services.query_understanding.understanding import QueryUnderstander, Understanding
from services.query_understanding.vocabulary import CatalogVocabulary

PROPERTY_SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def understander() -> QueryUnderstander:
    from services.local.catalog_import import demo_catalog_path
    from services.retrieval.catalog import read_catalog

    products, errors = read_catalog(demo_catalog_path())
    assert products and not errors
    vocabulary = CatalogVocabulary.from_products(
        {
            "title": p.title,
            "description": p.description,
            "brand": p.brand,
            "category": p.category,
            "attributes": dict(p.attributes),
        }
        for p in products
    )
    return QueryUnderstander(vocabulary)


# Any Unicode, surrogates and control characters included (the default alphabet leaves out
# surrogates, which a Python caller can still pass).
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=600)
NUMBERS = st.one_of(
    st.integers(min_value=-(10**400), max_value=10**400).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["1e309", "-1e309", "1e-400", "inf", "nan", "0", "-0", "00000", "1,000,000", "9" * 400,
                     "1.5.5", "1,00", ".5", "5.", "一百", "两千五", "1万", "99999999999999999999万"]),
)
PRICE_TEMPLATES = st.sampled_from(
    [
        "under {a}", "under ${a}", "below {a} dollars", "over ${a}", "from {a} to {b}", "between {a} and {b}",
        "${a}-${b}", "${a} - {b}", "{a} to {b} euros", "{a}元以下", "{a}到{b}元", "价格在{a}到{b}之间",
        "budget ${a}", "${a}+", "${a} or less", "red wine under ${a}", "shoes {a}-{b} eur", "$-{a}",
        "under -{a}", "under 1e{a}", "at least ${a} at most ${b}",
    ]
)
PRICE_QUERIES = st.builds(lambda t, a, b: t.format(a=a, b=b), PRICE_TEMPLATES, NUMBERS, NUMBERS)


def understood_or_rejected(understander: QueryUnderstander, query: str) -> Understanding | None:
    """The understanding, or None when the query was rejected as it should be: InvalidArgument
    naming `query`. Any other exception fails the test."""
    try:
        return understander.understand(query)
    except InvalidArgument as error:
        assert error.field == "query" and error.rule, error.message
        return None


def check_invariants(understanding: Understanding, query: str) -> None:
    assert understanding.original == query
    assert understanding.normalized == normalize(query)
    assert normalize(understanding.normalized) == understanding.normalized  # normalised
    assert understanding.normalized and understanding.normalized == understanding.normalized.strip()
    # Bounded: a query that normalises to more than the limit is refused (U+FDFA expands to 18).
    assert len(understanding.normalized) <= QueryUnderstander.MAX_QUERY_CHARS
    # Corrections replace whole words by catalogue words at most two edits away.
    assert len(understanding.corrected) <= len(understanding.normalized) + 2 * len(understanding.corrections)
    for original, corrected in understanding.corrections:
        assert original != corrected and original and corrected
    assert isinstance(understanding.language, str) and understanding.language
    assert 0.0 <= understanding.language_confidence <= 1.0
    for bound in (understanding.price_min, understanding.price_max):
        assert bound is None or (math.isfinite(bound) and bound >= 0), bound
    if understanding.price_min is not None and understanding.price_max is not None:
        assert understanding.price_min <= understanding.price_max
    for category, score in understanding.categories:
        assert category and 0.0 < score <= 1.0
    assert len(understanding.search_text) <= len(understanding.corrected)
    assert understanding.search_text == understanding.search_text.strip()
    assert understanding.tokens == tuple(words(understanding.search_text))
    assert len(understanding.tokens) <= len(understanding.search_text)


@PROPERTY_SETTINGS
@given(query=ANY_TEXT)
@example(query="")
@example(query="\x00\x01\x02\x1b[31m\x7f")
@example(query="\ud800 red wine \udfff")
@example(query="a" * 513)
@example(query="ﷺ" * 512)
@example(query="$-5")
@example(query="under 1e309")
@example(query="'; DROP TABLE products; --")
def test_any_text_is_understood_or_rejected_as_invalid_query(understander, query):
    understanding = understood_or_rejected(understander, query)
    if understanding is None:
        limit = QueryUnderstander.MAX_QUERY_CHARS
        # Too long as sent or once normalised (U+FDFA expands to 18), empty, or unencodable.
        assert len(query) > limit or len(normalize(query)) > limit or not normalize(query) or _has_surrogate(query)
    else:
        check_invariants(understanding, query)


@PROPERTY_SETTINGS
@given(query=PRICE_QUERIES)
@example(query="under $" + "9" * 400)
@example(query="between 1e309 and 5")
@example(query="$-5")
@example(query="from 50 to 10")
def test_price_filters_are_finite_non_negative_and_ordered(understander, query):
    understanding = understood_or_rejected(understander, query)
    if understanding is not None:
        check_invariants(understanding, query)
    price = extract_price(normalize(query))
    if price is not None:
        assert price.min is not None or price.max is not None
        assert price.phrase and price.phrase in normalize(query)
        for bound in (price.min, price.max):
            assert bound is None or (math.isfinite(bound) and bound >= 0), (query, price)


@PROPERTY_SETTINGS
@given(query=st.one_of(ANY_TEXT, PRICE_QUERIES))
def test_understanding_the_normalized_query_gives_the_same_understanding(understander, query):
    # Everything after validation is computed from the normalized text, and normalize is
    # idempotent, so a query and its normalized form are understood alike.
    first = understood_or_rejected(understander, query)
    if first is None:
        return
    second = understander.understand(first.normalized)
    assert second.normalized == first.normalized
    assert (second.corrected, second.corrections, second.language) == (first.corrected, first.corrections, first.language)
    assert (second.price_min, second.price_max, second.brands) == (first.price_min, first.price_max, first.brands)
    assert (second.categories, dict(second.attributes)) == (first.categories, dict(first.attributes))
    assert (second.search_text, second.tokens) == (first.search_text, first.tokens)


@PROPERTY_SETTINGS
@given(query=st.one_of(ANY_TEXT, PRICE_QUERIES))
def test_understanding_is_deterministic(understander, query):
    first = understood_or_rejected(understander, query)
    assert understood_or_rejected(understander, query) == first


def _has_surrogate(text: str) -> bool:
    return any("\ud800" <= character <= "\udfff" for character in text)
