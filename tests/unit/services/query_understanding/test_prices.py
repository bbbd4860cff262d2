"""Price intent and currencies in query understanding: "cheap" is a preference, not words to
match; a bound written in another currency is converted at a configured rate or not applied,
and the response says which."""

from __future__ import annotations

import pytest

from services.query_understanding.price_phrases import extract_price
from services.query_understanding.prices import CurrencyRates, low_price_intent, price_in_catalogue_currency
from services.query_understanding.understanding import QueryUnderstander
from services.query_understanding.vocabulary import CatalogVocabulary

VOCABULARY = CatalogVocabulary.from_products([
    {"title": "Malbec red wine", "category": "Red Wine", "currency": "USD"},
    {"title": "Green tea", "category": "Tea", "currency": "usd"},
    {"title": "Matcha", "category": "Tea", "currency": "EUR"},
])


@pytest.mark.parametrize("query, remaining", [
    ("cheap gift for my wife", "gift for my wife"),
    ("affordable running shoes", "running shoes"),
    ("budget headphones", "headphones"),
    ("low-cost tent", "tent"),
    ("便宜的红酒", "的红酒"),
    ("实惠 绿茶", "绿茶"),
])
def test_words_asking_for_something_cheap_become_a_preference_and_leave_the_search_text(query, remaining) -> None:
    assert low_price_intent(query) == (True, remaining)


@pytest.mark.parametrize("query", ["red wine", "cheapside market map", "budgetary report", "cheaper"])
def test_other_words_are_not_price_intent(query) -> None:
    assert low_price_intent(query) == (False, query)


def test_a_query_of_nothing_but_intent_keeps_its_words() -> None:
    assert low_price_intent("cheap") == (True, "cheap")


@pytest.mark.parametrize("query, currency", [
    ("under $50", "USD"), ("under 50 dollars", "USD"), ("100元以内", "CNY"), ("50块以下", "CNY"),
    ("¥100以下", "CNY"), ("under 40 euros", "EUR"), ("under £30", "GBP"), ("under 50", None),
])
def test_the_currency_a_bound_is_written_in_is_read(query, currency) -> None:
    assert extract_price(query).currency == currency


def test_the_catalogues_currency_is_what_most_products_are_priced_in() -> None:
    assert VOCABULARY.currency == "USD"
    assert CatalogVocabulary.empty().currency == ""


def test_a_bound_in_another_currency_is_converted_at_the_configured_rate_with_a_note() -> None:
    understander = QueryUnderstander(VOCABULARY, currency_rates=CurrencyRates.parse("USD=1, CNY=0.14"))
    understood = understander.understand("100元以内的红酒")
    assert understood.price_max == pytest.approx(14.0)
    assert understood.notes == ('"100元以内" read as 14 USD (1 CNY = 0.14 USD)',)


def test_without_a_rate_the_bound_is_not_applied_and_the_note_says_why() -> None:
    understood = QueryUnderstander(VOCABULARY).understand("100元以内的红酒")
    assert understood.price_max is None and understood.price_min is None
    assert "CNY" in understood.notes[0] and "SHELFWISE_CURRENCY_RATES" in understood.notes[0]


def test_a_bound_in_the_catalogues_currency_or_in_none_is_read_as_written() -> None:
    understander = QueryUnderstander(VOCABULARY)
    for query in ("red wine under $20", "red wine under 20"):
        understood = understander.understand(query)
        assert understood.price_max == 20 and understood.notes == ()


def test_a_range_converts_both_ends() -> None:
    price = extract_price("between 100 and 200 yuan")
    low, high, note = price_in_catalogue_currency(price, "USD", CurrencyRates.parse("CNY=0.14,USD=1"))
    assert (low, high) == (14.0, 28.0) and "14 to 28 USD" in note


def test_understanding_reports_price_intent() -> None:
    understood = QueryUnderstander(VOCABULARY).understand("cheap red wine")
    assert understood.prefers_low_price and understood.search_text == "red wine"


@pytest.mark.parametrize("raw", ["CNY", "CNY=abc", "CNY=-1", "CNY=0", "YUAN=0.1", "CNY=inf"])
def test_bad_currency_rates_name_the_setting_and_the_entry(raw) -> None:
    with pytest.raises(ValueError, match="SHELFWISE_CURRENCY_RATES"):
        CurrencyRates.parse(raw)
