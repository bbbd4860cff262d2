"""Autocomplete's index: completions from catalogue titles, brands, categories and clicked
queries, word-start and Chinese prefixes, one-edit typo tolerance ranked below what matches as
typed, the request checks of Suggest, and a look-up fast enough for every keystroke."""

from __future__ import annotations

import time

import pytest
from shelfwise.query_understanding.v1 import query_understanding_pb2 as qu_pb2

from services.common.errors import InvalidArgument
from services.query_understanding.servicer import validate_suggest
from services.query_understanding.suggestion_source import merged_queries
from services.query_understanding.suggestions import (
    Candidate,
    Ranking,
    Source,
    SuggestionIndex,
    catalogue_candidates,
    query_candidates,
    title_phrases,
)

PRODUCTS = [
    {"title": "Apple MacBook Air 13", "brand": "Apple", "category": "Laptops"},
    {"title": "Apple MacBook Pro 14", "brand": "Apple", "category": "Laptops"},
    {"title": "Lenovo ThinkPad X1", "brand": "Lenovo", "category": "Laptops"},
    {"title": "Trail running shoes", "brand": "", "category": "Running Shoes"},
    {"title": "红茶 特级 100g", "brand": "", "category": "茶叶"},
    {"title": "红色跑鞋", "brand": "", "category": "运动鞋"},
]


def index_of(products=PRODUCTS, queries=(), ranking: Ranking = Ranking()) -> SuggestionIndex:
    return SuggestionIndex(catalogue_candidates(products) + query_candidates(queries), ranking)


def texts(found) -> list[str]:
    return [s.text for s in found]


def test_title_phrases_are_the_leading_words_never_ending_on_a_stop_word_or_a_number() -> None:
    assert title_phrases("Apple MacBook Air 13") == ["apple", "apple macbook", "apple macbook air"]
    assert title_phrases("Bag for laptops") == ["bag", "bag for laptops"]
    assert title_phrases("红茶 特级 100g") == ["红茶", "红茶 特级", "红茶 特级 100g"]


def test_brands_categories_and_title_phrases_complete_a_prefix_each_with_its_source() -> None:
    index = index_of()
    found = {s.text: s.source for s in index.suggest("l", 10)}
    assert found["Laptops"] == Source.CATEGORY
    assert found["Lenovo"] == Source.BRAND
    assert index.suggest("trail r", 5)[0].text == "trail running"
    assert index.suggest("trail r", 5)[0].source == Source.TITLE


def test_a_prefix_completes_later_words_too_but_below_texts_it_starts() -> None:
    index = index_of()
    found = texts(index.suggest("mac", 10))
    # "macbook" (the title after its brand) starts with it; "apple macbook" has it as a later word.
    assert "macbook" in found and "apple macbook" in found
    assert found.index("macbook") < found.index("apple macbook")


def test_a_trailing_space_asks_for_the_next_word() -> None:
    index = index_of(queries=[("apples", 50)])
    assert "apples" in texts(index.suggest("apple", 10))
    as_typed = [s for s in index.suggest("apple ", 10) if not s.corrected]
    assert "apples" not in texts(as_typed)
    assert "apple macbook" in texts(as_typed)


def test_clicked_queries_are_suggested_most_searched_first() -> None:
    index = index_of(queries=[("macbook charger", 40), ("macbook case", 90)])
    found = [s for s in index.suggest("macbook c", 5) if not s.corrected]
    assert texts(found) == ["macbook case", "macbook charger"]
    assert all(s.source == Source.QUERY and not s.corrected for s in found)


def test_one_text_from_several_sources_is_one_suggestion() -> None:
    index = index_of(queries=[("laptops", 3)])
    found = [s for s in index.suggest("lapt", 10) if s.text.casefold() == "laptops"]
    assert len(found) == 1


def test_a_typo_is_corrected_marked_so_and_ranked_below_what_matches_as_typed() -> None:
    index = index_of(queries=[("lenovo yoga", 30)])
    found = index.suggest("lenvo", 5)
    assert found and all(s.corrected for s in found)
    assert "Lenovo" in texts(found) and "lenovo yoga" in texts(found)
    # "macbok" matches nothing as typed; "macbook" one edit away.
    assert index.suggest("macbok", 3)[0].text == "macbook"
    mixed = index_of(queries=[("thinkpad", 5), ("thinkpda", 1)]).suggest("thinkpd", 5)
    assert [s.corrected for s in mixed] == sorted(s.corrected for s in mixed)
    assert all(a.score >= b.score for a, b in zip(mixed, mixed[1:]))


def test_short_prefixes_are_not_corrected() -> None:
    assert index_of().suggest("lw", 5) == []
    assert index_of(ranking=Ranking(min_typo_chars=4)).suggest("lwn", 5) == []
    assert "Lenovo" in texts(index_of(ranking=Ranking(min_typo_chars=3)).suggest("lwn", 5))


def test_by_default_logged_queries_come_before_catalogue_texts_which_still_fill_the_limit() -> None:
    index = index_of(queries=[("lego", 2)])
    found = index.suggest("l", 5)
    assert found[0].text == "lego" and found[0].source == Source.QUERY
    assert {"Laptops", "Lenovo"} <= set(texts(found))
    weighted = index_of(queries=[("lego", 2)], ranking=Ranking(catalogue_weight=1.0)).suggest("l", 5)
    assert weighted[0].text == "Laptops"  # three laptops outweigh two searches at weight 1


def test_chinese_prefixes_complete_chinese_text_by_character_and_at_word_starts() -> None:
    index = index_of()
    assert {"红茶", "红色跑鞋"} <= set(texts(index.suggest("红", 10)))
    assert "红色跑鞋" in texts(index.suggest("跑", 10))
    assert "茶叶" in texts(index.suggest("茶", 10))


def test_an_empty_index_or_prefix_suggests_nothing() -> None:
    assert SuggestionIndex.empty().suggest("apple", 5) == []
    assert index_of().suggest("   ", 5) == []
    assert index_of().suggest("zzzzzzz", 5) == []


def test_the_limit_is_honoured_and_ties_break_by_text() -> None:
    candidates = [Candidate(f"item {n:02d}", Source.QUERY, 5) for n in range(30)]
    index = SuggestionIndex(candidates)
    assert texts(index.suggest("item", 4)) == ["item 00", "item 01", "item 02", "item 03"]


def test_spellings_of_one_query_are_merged_and_summed() -> None:
    assert merged_queries([("macbook  Pro", 3), ("MacBook Pro", 4), ("tv", 9)]) == [("tv", 9), ("macbook pro", 7)]


@pytest.mark.parametrize("request_fields, message", [
    ({"prefix": ""}, "prefix: is required"),
    ({"prefix": "   "}, "prefix: is required"),
    ({"prefix": "x" * 101}, "prefix: must be at most 100 characters"),
    ({"prefix": "\ufdfa" * 10}, "prefix: must be at most 100 characters once normalised"),
    ({"prefix": "mac", "limit": 0}, "limit: must be between 1 and 20"),
    ({"prefix": "mac", "limit": 21}, "limit: must be between 1 and 20"),
    ({"prefix": "mac", "locale": "x" * 36}, "locale: "),
])
def test_suggest_requests_out_of_bounds_are_refused_naming_the_field(request_fields, message) -> None:
    with pytest.raises(InvalidArgument) as refused:
        validate_suggest(qu_pb2.SuggestRequest(**request_fields))
    assert str(refused.value).startswith(message)


def test_a_suggest_request_without_limit_asks_for_five() -> None:
    assert validate_suggest(qu_pb2.SuggestRequest(prefix=" mac")) == (" mac", 5)


def test_a_look_up_on_a_10k_product_catalogue_takes_well_under_20_ms() -> None:
    from services.local.synthetic_catalog import generate_products

    products = [{"title": p.title, "brand": p.brand, "category": p.category} for p in generate_products(10_000)]
    index = index_of(products)
    prefixes = [p["title"][:n] for p in products[:300] for n in (1, 3, 6)]
    prefixes += [p["title"][1:6] for p in products[:300]]  # first letter lost: the typo path
    took = []
    for prefix in prefixes:
        started = time.perf_counter()
        index.suggest(prefix, 10)
        took.append(time.perf_counter() - started)
    took.sort()
    assert took[int(0.99 * len(took))] < 0.020, f"p99 {took[int(0.99 * len(took))] * 1000:.1f} ms"
