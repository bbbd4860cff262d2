"""Unit tests of services.query_understanding: vocabulary, spelling, filters, language, pipeline."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from services.common.errors import InvalidArgument
from services.common.text import normalize
from services.query_understanding.filters import extract_filters
from services.query_understanding.language import detect_language
from services.query_understanding.price_phrases import extract_price
from services.query_understanding.spelling import SpellingCorrector
from services.query_understanding.understanding import QueryUnderstander, Understanding
from services.query_understanding.vocabulary import CatalogVocabulary

PRODUCTS = [
    {
        "title": "Stride Red Running Shoes",
        "description": "Lightweight running shoes with a breathable mesh upper.",
        "brand": "Stride",
        "category": "Running Shoes",
        "attributes": {"color": "Red", "size": "9", "material": "Mesh"},
    },
    {
        "title": "Stride Blue Trail Running Shoes",
        "description": "Grippy trail shoes for muddy runs.",
        "brand": "Stride",
        "category": "Running Shoes",
        "attributes": {"color": "Blue", "size": "10", "material": "Mesh"},
    },
    {
        "title": "Pacer Black Running Shoes",
        "description": "Cushioned daily trainers, wide width.",
        "brand": "Pacer",
        "category": "Running Shoes",
        "attributes": {"color": "Black", "size": "11", "material": "Synthetic"},
    },
    {
        "title": "Oxford Leather Dress Shoes",
        "description": "Classic brown leather shoes for the office.",
        "brand": "Bellamy & Sons",
        "category": "Dress Shoes",
        "attributes": {"color": "Brown", "material": "Leather"},
    },
    {
        "title": "Chateau Rouge Cabernet Sauvignon",
        "description": "A full-bodied red wine with notes of blackcurrant.",
        "brand": "Chateau Rouge",
        "category": "Wine",
        "attributes": {"color": "Red", "region": "Bordeaux"},
    },
    {
        "title": "Valle Alto Merlot",
        "description": "Smooth red wine, soft tannins, drinks well young.",
        "brand": "Valle Alto",
        "category": "Wine",
        "attributes": {"color": "Red", "region": "Chile"},
    },
    {
        "title": "Valle Alto Chardonnay",
        "description": "Crisp white wine with citrus aromas.",
        "brand": "Valle Alto",
        "category": "Wine",
        "attributes": {"color": "White", "region": "Chile"},
    },
    {
        "title": "西湖龙井绿茶",
        "description": "明前龙井，清香回甘。",
        "brand": "狮峰",
        "category": "Tea",
        "attributes": {"origin": "杭州"},
    },
    {
        "title": "Earl Grey Black Tea",
        "description": "Soothing black tea with bergamot, 50 bags.",
        "brand": "Twinings",
        "category": "Tea",
        "attributes": None,
    },
    {
        "title": "轻量缓震跑鞋",
        "description": "透气网面跑鞋",
        "brand": "李宁",
        "category": "跑鞋",
        "attributes": {"color": "白色"},
    },
    {
        "title": "Cotton Crew T-Shirt",
        "description": "Soft organic cotton tee.",
        "brand": "Basics Co",
        "category": "T-Shirts",
        "attributes": {"color": "White", "material": "Cotton", "size": "M"},
    },
    {
        "title": "Wool Winter Scarf",
        "description": "Warm merino wool scarf in red.",
        "brand": "Northwind",
        "category": "Scarves",
        "attributes": {"color": "Red", "material": "Wool"},
    },
    {
        "title": "Apple iPhone 15 Case",
        "description": "Slim silicone case for iPhone 15.",
        "brand": "Casely",
        "category": "Phone Cases",
        "attributes": {"color": "Black", "material": "Silicone"},
    },
    {
        "title": "Stainless Steel Water Bottle",
        "description": "Keeps drinks cold for 24 hours.",
        "brand": "Hydra",
        "category": "Bottles",
        "attributes": {"material": "Stainless Steel", "capacity": "750 ml"},
    },
    {
        "title": "Chef Knife",
        "description": "Forged steel chef knife, perfect for meat.",
        "brand": "Kaito",
        "category": "Kitchen Knives",
        "attributes": {"material": "Steel"},
    },
]


@pytest.fixture(scope="module")
def vocabulary() -> CatalogVocabulary:
    return CatalogVocabulary.from_products(PRODUCTS)


@pytest.fixture(scope="module")
def understander(vocabulary: CatalogVocabulary) -> QueryUnderstander:
    return QueryUnderstander(vocabulary)


# --- vocabulary --------------------------------------------------------------------------------


def test_vocabulary_weights_title_words_three_times(vocabulary: CatalogVocabulary) -> None:
    # "stride": 2 titles x 3 + 2 brands; "breathable": 1 description.
    assert vocabulary.word_counts["stride"] == 8
    assert vocabulary.word_counts["breathable"] == 1
    assert vocabulary.word_counts["龙井"] >= 3


def test_vocabulary_maps_normalized_brands_to_catalogue_spelling(
    vocabulary: CatalogVocabulary,
) -> None:
    assert vocabulary.brands["stride"] == "Stride"
    assert vocabulary.brands["bellamy & sons"] == "Bellamy & Sons"
    assert vocabulary.brands["李宁"] == "李宁"


def test_vocabulary_registers_singular_form_of_plural_categories(
    vocabulary: CatalogVocabulary,
) -> None:
    assert vocabulary.categories["running shoes"] == "Running Shoes"
    assert vocabulary.categories["running shoe"] == "Running Shoes"
    assert vocabulary.categories["scarf"] == "Scarves"
    assert vocabulary.categories["kitchen knife"] == "Kitchen Knives"
    assert vocabulary.categories["tea"] == "Tea"


def test_vocabulary_keeps_short_values_of_shared_attributes_only(
    vocabulary: CatalogVocabulary,
) -> None:
    assert vocabulary.attribute_values["red"] == ("color", "Red")
    assert vocabulary.attribute_values["stainless steel"] == ("material", "Stainless Steel")
    assert "9" not in vocabulary.attribute_values  # pure number
    assert "750 ml" not in vocabulary.attribute_values  # attribute on one product only
    assert "m" not in vocabulary.attribute_values  # single character


def test_empty_vocabulary_knows_nothing() -> None:
    empty = CatalogVocabulary.empty()
    assert not empty.word_counts and not empty.brands
    assert not empty.categories and not empty.attribute_values
    assert CatalogVocabulary.from_products([]) == empty


def test_vocabulary_tolerates_missing_fields() -> None:
    vocabulary = CatalogVocabulary.from_products([{"title": "Red Kettle"}, {"brand": None}])
    assert vocabulary.word_counts["kettle"] == 3
    assert vocabulary.brands == {}


def test_vocabulary_mappings_are_read_only(vocabulary: CatalogVocabulary) -> None:
    with pytest.raises(TypeError):
        vocabulary.brands["x"] = "X"  # type: ignore[index]


# --- spelling ----------------------------------------------------------------------------------


def test_spelling_corrects_a_typo_to_a_catalogue_word(vocabulary: CatalogVocabulary) -> None:
    corrected, pairs = SpellingCorrector(vocabulary).correct(["red", "runing", "shoes"])
    assert corrected == ["red", "running", "shoes"]
    assert pairs == [("runing", "running")]


def test_spelling_allows_two_edits_only_for_long_words(vocabulary: CatalogVocabulary) -> None:
    speller = SpellingCorrector(vocabulary)
    assert speller.correct(["chardonay"])[0] == ["chardonnay"]
    assert speller.correct(["sarvignon"])[0] == ["sauvignon"]
    assert speller.correct(["stri"])[0] == ["stri"]  # "stride" is 2 edits away, word too short


def test_spelling_never_touches_known_short_numeric_or_cjk_words(
    vocabulary: CatalogVocabulary,
) -> None:
    speller = SpellingCorrector(vocabulary)
    untouched = ["shoes", "tee", "rde", "15", "iphone16", "$50", "龙景", "кросовки"]
    assert speller.correct(untouched) == (untouched, [])


def test_spelling_does_not_turn_common_english_words_into_catalogue_words(
    vocabulary: CatalogVocabulary,
) -> None:
    # "drink" is one edit from the catalogue's "drinks"; it is a real word, so it stays.
    speller = SpellingCorrector(vocabulary)
    words = ["something", "drink", "with", "dollars", "cheap", "gift"]
    assert speller.correct(words) == (words, [])


def test_spelling_leaves_inflections_of_catalogue_words_alone(
    vocabulary: CatalogVocabulary,
) -> None:
    # "shoe" and "runs" share a stem with "shoes" and "running": BM25 already matches them.
    assert SpellingCorrector(vocabulary).correct(["shoe", "runs"]) == (["shoe", "runs"], [])


def test_spelling_with_empty_vocabulary_changes_nothing() -> None:
    assert SpellingCorrector(CatalogVocabulary.empty()).correct(["runing"]) == (["runing"], [])


# --- price -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "low", "high"),
    [
        ("under $50", None, 50),
        ("under 50", None, 50),
        ("below 50 dollars", None, 50),
        ("less than $50", None, 50),
        ("cheaper than 50", None, 50),
        ("< 50", None, 50),
        ("up to 50", None, 50),
        ("max 50", None, 50),
        ("$50 or less", None, 50),
        ("over $20", 20, None),
        ("above 20", 20, None),
        ("more than 20", 20, None),
        ("at least 20", 20, None),
        ("from $20", 20, None),
        ("$20 and up", 20, None),
        ("between 20 and 50", 20, 50),
        ("$20-$50", 20, 50),
        ("20 to 50 dollars", 20, 50),
        ("$20 - 50", 20, 50),
        ("from $20 to $50", 20, 50),
        ("over $20 and under $50", 20, 50),
        ("under $19.99", None, 19.99),
        ("under $1,000", None, 1000),
        ("ＵＮＤＥＲ　＄５０", None, 50),
        ("50元以下", None, 50),
        ("50块以下", None, 50),
        ("低于50元", None, 50),
        ("不超过100元", None, 100),
        ("100元以内", None, 100),
        ("100以内", None, 100),
        ("50元以上", 50, None),
        ("高于50", 50, None),
        ("50到100元", 50, 100),
        ("50-100元", 50, 100),
        ("价格在50到100之间", 50, 100),
        ("50元以上100元以下", 50, 100),
    ],
)
def test_price_phrases_give_bounds(query: str, low: float | None, high: float | None) -> None:
    price = extract_price(normalize(query))
    assert price is not None
    assert (price.min, price.max) == (low, high)


@pytest.mark.parametrize(
    "query",
    [
        "iphone 15",
        "size 9",
        "shoes size 9 to 10",
        "2 pack socks",
        "dress from 2020",
        "20+ colors",
        "under 50 kg",
        "up to 50% off",
        "toys for kids under 5",
        "5到10岁",
        "iphone 11 pro max",
    ],
)
def test_bare_numbers_are_not_prices(query: str) -> None:
    assert extract_price(normalize(query)) is None


def test_price_phrase_is_the_exact_matched_text() -> None:
    price = extract_price(normalize("Red shoes priced under $50 please"))
    assert price is not None
    assert price.phrase == "priced under $50"


def test_a_number_range_before_a_price_range_is_not_taken_for_the_price() -> None:
    price = extract_price("ages 3-5 $20-$30")
    assert price is not None and (price.min, price.max) == (20, 30)


def test_price_bounds_are_returned_as_written_even_when_reversed() -> None:
    price = extract_price("50 to 20 dollars")
    assert price is not None and (price.min, price.max) == (50, 20)


# --- filters -----------------------------------------------------------------------------------


def test_filters_find_brand_category_and_attribute(vocabulary: CatalogVocabulary) -> None:
    found = extract_filters("stride red running shoes under $50", vocabulary)
    assert found.price is not None and found.price.max == 50
    assert found.brands == ["Stride"]
    assert found.categories == [("Running Shoes", 1.0)]
    assert dict(found.attributes) == {"color": "Red"}
    assert found.remaining_text == "stride red running shoes"


def test_filters_score_head_word_matches_lower(vocabulary: CatalogVocabulary) -> None:
    found = extract_filters("brown shoes", vocabulary)
    assert found.categories == [("Dress Shoes", 0.6), ("Running Shoes", 0.6)]
    assert dict(found.attributes) == {"color": "Brown"}


def test_filters_match_whole_words_only(vocabulary: CatalogVocabulary) -> None:
    found = extract_filters("redmi phone", vocabulary)
    assert dict(found.attributes) == {}
    assert found.brands == []


def test_filters_prefer_the_longest_multi_word_match(vocabulary: CatalogVocabulary) -> None:
    found = extract_filters("stainless steel bottle", vocabulary)
    assert dict(found.attributes) == {"material": "Stainless Steel"}


def test_filters_match_chinese_brand_and_category_as_substrings(
    vocabulary: CatalogVocabulary,
) -> None:
    found = extract_filters("李宁跑鞋白色", vocabulary)
    assert found.brands == ["李宁"]
    assert ("跑鞋", 1.0) in found.categories
    assert dict(found.attributes) == {"color": "白色"}


def test_filters_without_price_keep_the_whole_text(vocabulary: CatalogVocabulary) -> None:
    found = extract_filters("earl grey tea", vocabulary)
    assert found.price is None
    assert found.remaining_text == "earl grey tea"
    assert found.categories == [("Tea", 1.0)]


# --- language ----------------------------------------------------------------------------------


def test_language_of_english_sentence_is_en() -> None:
    language, confidence = detect_language("something to drink with a steak dinner")
    assert language == "en" and confidence > 0.9


def test_language_of_german_sentence_is_de() -> None:
    language, confidence = detect_language("Ich suche bequeme Laufschuhe für den Winter")
    assert language == "de" and confidence > 0.9


def test_language_of_chinese_is_zh_with_confidence_from_han_share() -> None:
    language, confidence = detect_language("西湖龙井绿茶")
    assert language == "zh" and confidence == 1.0
    mixed_language, mixed_confidence = detect_language("iphone 手机")
    assert mixed_language == "zh" and 0.5 <= mixed_confidence < confidence


def test_language_of_kana_and_hangul_text() -> None:
    assert detect_language("東京タワー")[0] == "ja"
    assert detect_language("한국 신발")[0] == "ko"


def test_language_of_short_ambiguous_query_falls_back_to_english_with_low_confidence() -> None:
    language, confidence = detect_language("iphone 15")
    assert language == "en" and confidence < 0.5


def test_language_of_short_query_uses_langid_when_it_is_very_confident() -> None:
    assert detect_language("laufschuhe")[0] == "de"


def test_language_prefers_english_when_most_words_are_common_english() -> None:
    # py3langid alone says Spanish (0.92) for this one.
    language, confidence = detect_language("gift for dad under 30 dollars")
    assert language == "en" and 0.5 < confidence < 1.0


def test_language_of_text_without_letters_is_en_with_zero_confidence() -> None:
    assert detect_language("12345 $$$") == ("en", 0.0)


# --- the pipeline ------------------------------------------------------------------------------


def test_understand_corrects_spelling_and_extracts_filters(understander: QueryUnderstander) -> None:
    u = understander.understand("Red runing shoes under $50")
    assert isinstance(u, Understanding)
    assert u.normalized == "red runing shoes under $50"
    assert u.corrected == "red running shoes under $50"
    assert u.corrections == (("runing", "running"),)
    assert u.price_min is None and u.price_max == 50
    assert dict(u.attributes) == {"color": "Red"}
    assert u.categories[0] == ("Running Shoes", 1.0)
    assert u.search_text == "red running shoes"
    assert u.tokens == ("red", "running", "shoes")
    assert u.language == "en"


def test_understand_leaves_ordinary_english_alone(understander: QueryUnderstander) -> None:
    u = understander.understand("something to drink with steak")
    assert u.corrections == ()
    assert u.corrected == "something to drink with steak"
    assert u.search_text == "something to drink with steak"


def test_understand_chinese_query_with_price(understander: QueryUnderstander) -> None:
    u = understander.understand("跑鞋 100元以内")
    assert u.price_max == 100 and u.price_min is None
    assert u.language == "zh"
    assert u.search_text == "跑鞋"
    assert u.tokens == ("跑鞋",)
    assert ("跑鞋", 1.0) in u.categories


def test_a_chinese_query_gets_an_english_rendering_of_its_search_text(vocabulary) -> None:
    u = QueryUnderstander(vocabulary).understand("红葡萄酒和绿茶 100元以内")
    assert u.language == "zh" and u.search_text == "红葡萄酒和绿茶"
    assert u.translation == "red wine and green tea"  # without the price phrase, "和" as "and"
    assert QueryUnderstander(vocabulary).understand("red wine and green tea").translation == ""
    assert QueryUnderstander(vocabulary, translate=False).understand("红葡萄酒和绿茶").translation == ""


def test_understand_between_gives_a_range(understander: QueryUnderstander) -> None:
    u = understander.understand("wine between 20 and 50")
    assert (u.price_min, u.price_max) == (20, 50)
    assert u.search_text == "wine"


def test_understand_swaps_reversed_price_bounds(understander: QueryUnderstander) -> None:
    u = understander.understand("wine 50 to 20 dollars")
    assert (u.price_min, u.price_max) == (20, 50)


def test_understand_bare_numbers_are_not_prices(understander: QueryUnderstander) -> None:
    u = understander.understand("iphone 15 case")
    assert u.price_min is None and u.price_max is None
    assert u.search_text == "iphone 15 case"


def test_understand_price_only_query_has_empty_search_text(
    understander: QueryUnderstander,
) -> None:
    u = understander.understand("under $50")
    assert u.price_max == 50
    assert u.search_text == "" and u.tokens == ()


def test_understand_keeps_punctuation_and_chinese_when_correcting(
    understander: QueryUnderstander,
) -> None:
    u = understander.understand("Stride runing-shoes, 龙井 $20-$50")
    assert u.corrected == "stride running-shoes, 龙井 $20-$50"
    assert (u.price_min, u.price_max) == (20, 50)


@pytest.mark.parametrize("query", ["", "   ", "\t\n", "\u200b"])
def test_understand_rejects_empty_or_whitespace_query(
    understander: QueryUnderstander, query: str
) -> None:
    with pytest.raises(InvalidArgument) as error:
        understander.understand(query)
    assert error.value.field == "query"
    assert "empty" in error.value.message


def test_understand_rejects_oversized_query(understander: QueryUnderstander) -> None:
    query = "shoes " * 200_000  # ~1.2 MB
    with pytest.raises(InvalidArgument) as error:
        understander.understand(query)
    assert error.value.field == "query"
    assert f"at most {QueryUnderstander.MAX_QUERY_CHARS} characters, got {len(query)}" in str(
        error.value
    )


def test_understand_accepts_a_query_of_exactly_the_maximum_length(
    understander: QueryUnderstander,
) -> None:
    u = understander.understand("a" * QueryUnderstander.MAX_QUERY_CHARS)
    assert u.normalized == "a" * QueryUnderstander.MAX_QUERY_CHARS


def test_understand_with_empty_vocabulary_still_extracts_price() -> None:
    u = QueryUnderstander(CatalogVocabulary.empty()).understand("runing shoes under 30")
    assert u.corrections == ()
    assert u.price_max == 30
    assert u.brands == () and u.categories == () and dict(u.attributes) == {}


def test_understand_after_warm_up_gives_the_same_result(
    understander: QueryUnderstander,
) -> None:
    before = understander.understand("stride runing shoes")
    understander.warm_up()
    assert understander.understand("stride runing shoes") == before


def test_query_understanding_never_imports_grpc() -> None:
    code = (
        "import sys\n"
        "import services.query_understanding.understanding\n"
        "import services.common.text\n"
        "assert not any(m == 'grpc' or m.startswith('grpc.') for m in sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[4])


def test_understand_never_raises_anything_but_invalid_argument_on_random_input(
    understander: QueryUnderstander,
) -> None:
    rng = random.Random(0)
    alphabet = (
        list("abcdefghijklmnopqrstuvwxyz ABCXYZ")
        + list("0123456789" * 2)
        + list("$$$.,-'%<>+~/&!?()[]{}\"\\_=*#@^|`;:")
        + list("跑鞋西湖龙井绿茶元块以下以内以上到之间价格低于高于不超过")
        + list("😀🎉👟🍷❤️\u200d\u200b\t\n\x00\ufeffＡ１＄ｶ한é")
    )
    for _ in range(500):
        query = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        try:
            u = understander.understand(query)
        except InvalidArgument as error:
            assert error.field == "query"
            continue
        assert 0.0 <= u.language_confidence <= 1.0
        if u.price_min is not None and u.price_max is not None:
            assert u.price_min <= u.price_max
        assert all(tok for tok in u.tokens)


# --- catalogue matching: units, possessives, compound categories, plurals, context ---------------

MATCHING_PRODUCTS = [
    {"title": "Oolong Tea", "category": "Tea", "attributes": {"type": "oolong", "weight": "100 g", "color": "green"}},
    {"title": "Breakfast Tea", "category": "Tea", "attributes": {"type": "black", "weight": "250 g"}},
    {"title": "Green Tea", "category": "Tea", "attributes": {"type": "green", "weight": "100 g"}},
    {"title": "Sencha", "category": "Tea", "attributes": {"type": "green"}},
    {"title": "Trail Runner", "category": "Running Shoes", "attributes": {"color": "black", "gender": "women"}},
    {"title": "Road Runner", "category": "Running Shoes", "attributes": {"color": "green", "gender": "men"}},
    {"title": "Oxford Shirt", "category": "Men's Clothing", "attributes": {"color": "black", "gender": "men"}},
    {"title": "Silk Dress", "category": "Women's Clothing", "attributes": {"color": "black", "gender": "women"}},
    {"title": "Ultrabook", "category": "Laptops & Tablets", "attributes": {"color": "black"}},
    {"title": "Cat Tower", "category": "Pet Supplies", "attributes": {"animal": "cat"}},
    {"title": "Dog Bed", "category": "Pet Supplies", "attributes": {"animal": "dog"}},
    {"title": "Island Rum", "category": "Spirits", "attributes": {"volume": "500ml"}},
    {"title": "Dry Gin", "category": "Spirits", "attributes": {"volume": "500ml"}},
    {"title": "Soy Sauce", "category": "Pantry", "attributes": {"volume": "500 ml"}},
]


@pytest.fixture(scope="module")
def matching() -> CatalogVocabulary:
    return CatalogVocabulary.from_products(MATCHING_PRODUCTS)


def test_a_number_glued_to_its_unit_matches_the_value_written_apart(matching: CatalogVocabulary) -> None:
    assert dict(extract_filters("oolong tea 100g", matching).attributes) == {"type": "oolong", "weight": "100 g"}


def test_a_value_spelled_both_ways_keeps_the_spelling_of_the_query(matching: CatalogVocabulary) -> None:
    # Ranking compares attribute values exactly, so "500ml" must stay the catalogue's "500ml".
    assert dict(extract_filters("rum 500ml", matching).attributes) == {"volume": "500ml"}
    assert dict(extract_filters("sauce 500 ml", matching).attributes) == {"volume": "500 ml"}


def test_possessive_without_apostrophe_names_one_category(matching: CatalogVocabulary) -> None:
    assert extract_filters("mens clothing under $40", matching).categories == [("Men's Clothing", 1.0)]
    assert extract_filters("womens clothing", matching).categories == [("Women's Clothing", 1.0)]
    assert extract_filters("clothing", matching).categories == [
        ("Men's Clothing", 0.6), ("Women's Clothing", 0.6)
    ]


def test_one_part_of_a_compound_category_names_it(matching: CatalogVocabulary) -> None:
    assert extract_filters("laptop under $1000", matching).categories == [("Laptops & Tablets", 1.0)]
    assert extract_filters("tablets", matching).categories == [("Laptops & Tablets", 1.0)]


def test_a_part_shared_by_two_compound_categories_names_neither() -> None:
    vocabulary = CatalogVocabulary.from_products(
        [{"category": "Phone Cases & Accessories"}, {"category": "Bags & Accessories"}]
    )
    assert vocabulary.categories["phone cases"] == "Phone Cases & Accessories"
    assert vocabulary.categories["bag"] == "Bags & Accessories"
    assert "accessories" not in vocabulary.categories


def test_plural_and_possessive_forms_of_attribute_values_match(matching: CatalogVocabulary) -> None:
    assert dict(extract_filters("toys for cats", matching).attributes) == {"animal": "cat"}
    found = extract_filters("womens running shoes", matching)
    assert dict(found.attributes) == {"gender": "women"}
    assert found.categories == [("Running Shoes", 1.0)]


def test_a_shared_value_is_read_as_the_attribute_of_the_named_category(matching: CatalogVocabulary) -> None:
    assert dict(extract_filters("black tea", matching).attributes) == {"type": "black"}
    # "green" is also the colour of one tea; two teas are of type green.
    assert dict(extract_filters("green tea", matching).attributes) == {"type": "green"}
    assert dict(extract_filters("black running shoes", matching).attributes) == {"color": "black"}
    assert dict(extract_filters("black", matching).attributes) == {"color": "black"}


def test_vocabulary_keeps_every_reading_of_a_shared_value_with_its_categories(
    matching: CatalogVocabulary,
) -> None:
    readings = {(name, value): dict(cats) for name, value, cats in matching.attribute_candidates["black"]}
    assert list(readings)[0] == ("color", "black")  # the default reading comes first
    assert readings[("type", "black")] == {"Tea": 1}
    assert matching.attribute_values["black"] == ("color", "black")


# --- price: Chinese numerals and budgets -------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "low", "high"),
    [
        ("桌游 一百元以下", None, 100),
        ("十块钱以下的零食", None, 10),
        ("十五元以下", None, 15),
        ("两千五以内", None, 2500),
        ("一千五百元以内", None, 1500),
        ("一万二千元以下", None, 12000),
        ("1万以内", None, 10000),
        ("5千元以下", None, 5000),
        ("1.5万以内", None, 15000),
        ("一百到两百元", 100, 200),
        ("预算80元", None, 80),
        ("咖啡 预算 80", None, 80),
        ("预算100元以上", 100, None),
        ("预算在50到100元", 50, 100),
        ("budget $50", None, 50),
        ("headphones on a budget of 80 dollars", None, 80),
    ],
)
def test_chinese_numerals_and_budgets_give_bounds(query: str, low: float | None, high: float | None) -> None:
    price = extract_price(normalize(query))
    assert price is not None
    assert (price.min, price.max) == (low, high)


@pytest.mark.parametrize(
    "query",
    ["3千克 大米", "百搭 白色", "最多三件", "三岁以下 玩具", "高于一切", "十全十美", "2千米", "budget headphones"],
)
def test_chinese_numerals_inside_words_and_units_are_not_prices(query: str) -> None:
    assert extract_price(normalize(query)) is None


# --- spelling: price words and misspelt English that looks foreign -----------------------------

TYPO_PRODUCTS = [
    {"title": "Leather Dog Collar", "description": "A collar for doors and dogs.", "category": "Pet Supplies"},
    {"title": "Stand Mixer", "description": "Kitchen appliances for bakers.", "category": "Kitchen Appliances"},
    {"title": "Kettle", "description": "Kitchen appliances, stainless.", "category": "Kitchen Appliances"},
]


def test_typos_of_price_words_are_restored_not_bent_to_catalogue_words() -> None:
    speller = SpellingCorrector(CatalogVocabulary.from_products(TYPO_PRODUCTS))
    # Before, "dolars" became the catalogue's "doors" and "dollasr" its "collar".
    assert speller.correct(["dolars", "undwr", "bwtween"])[0] == ["dollars", "under", "between"]
    assert speller.correct(["dollasr"])[0][0] in {"dollar", "dollars"}


def test_misspelt_english_that_looks_foreign_is_still_corrected() -> None:
    understander = QueryUnderstander(CatalogVocabulary.from_products(TYPO_PRODUCTS))
    query = "ktichen applianecs abpve $100"
    assert detect_language(query)[0] != "en"  # py3langid: German, 0.9999
    u = understander.understand(query)
    assert u.corrected == "kitchen appliances above $100"
    assert u.language == "en"
    assert u.price_min == 100 and u.categories == (("Kitchen Appliances", 1.0),)


@pytest.mark.parametrize(
    "query", ["rotwein trocken unter 20 euro", "rote laufschuhe unter 50", "chaussures de course rouges"]
)
def test_confidently_foreign_queries_stay_uncorrected(query: str) -> None:
    understander = QueryUnderstander(CatalogVocabulary.from_products(TYPO_PRODUCTS + PRODUCTS))
    u = understander.understand(query)
    assert u.corrections == () and u.corrected == u.normalized
    assert u.language in {"de", "fr"}
