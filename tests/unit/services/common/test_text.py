"""Unit tests of services.common.text: normalization, tokenization, BM25 index terms."""

from __future__ import annotations

import random

from services.common.text import contains_cjk, index_terms, normalize, word_spans, words


def test_normalize_casefolds_collapses_whitespace_and_strips() -> None:
    assert normalize("  Red \t Running\nSHOES  ") == "red running shoes"


def test_normalize_converts_full_width_digits_letters_and_currency() -> None:
    assert normalize("ＵＮＤＥＲ　＄５０") == "under $50"
    assert normalize("１００元") == "100元"


def test_normalize_keeps_price_punctuation() -> None:
    assert normalize("Men's T-Shirt under $19.99, 20% off") == "men's t-shirt under $19.99, 20% off"


def test_normalize_drops_invisible_and_control_characters() -> None:
    assert normalize("red\u200bshoes\x00 now\ufeff") == "redshoes now"
    assert normalize("\u200b \u200b") == ""


def test_normalize_is_idempotent_on_random_text() -> None:
    rng = random.Random(1)
    alphabet = "aZß İ\u0307é\u0301 ＡＢ１２３$.,'-%茶鞋ｶﾀｶﾅ한\u200b\t\n😀ﬁ"
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        once = normalize(text)
        assert normalize(once) == once


def test_contains_cjk_detects_han_kana_and_hangul_only() -> None:
    assert contains_cjk("跑鞋")
    assert contains_cjk("iphone 手机")
    assert contains_cjk("カタカナ")
    assert contains_cjk("한국어")
    assert not contains_cjk("red running shoes")
    assert not contains_cjk("кроссовки")


def test_words_split_latin_on_punctuation_and_keep_digits_in_runs() -> None:
    assert words("Men's T-Shirt, iPhone15 under $19.99") == [
        "men",
        "s",
        "t",
        "shirt",
        "iphone15",
        "under",
        "19",
        "99",
    ]


def test_words_segment_chinese_with_jieba() -> None:
    assert words("西湖龙井绿茶") == ["西湖", "龙井", "绿茶"]


def test_words_handle_mixed_chinese_latin_and_numbers() -> None:
    assert words("跑鞋 100元以内") == ["跑鞋", "100", "元", "以内"]
    assert words("Nike跑鞋") == ["nike", "跑鞋"]


def test_words_of_punctuation_only_text_are_empty() -> None:
    assert words("!!! ... $$$") == []
    assert words("") == []


def test_word_spans_point_back_into_the_normalized_text() -> None:
    text = normalize("Red runing-shoes 西湖龙井 under $50")
    spans = word_spans(text)
    assert [w for w, _, _ in spans] == words(text)
    for word, start, end in spans:
        assert text[start:end] == word


def test_index_terms_stem_english_words() -> None:
    assert index_terms("Running Shoes") == ["run", "shoe"]
    assert index_terms("running shoe") == index_terms("RUNNING SHOES")


def test_index_terms_drop_english_stop_words() -> None:
    assert index_terms("a gift for the kids under the tree") == ["gift", "kid", "tree"]
    assert index_terms("men's shoes") == ["men", "shoe"]


def test_index_terms_keep_numbers_and_alphanumeric_codes_unstemmed() -> None:
    assert index_terms("iPhone15 cases 128gb") == ["iphone15", "case", "128gb"]


def test_index_terms_use_jieba_search_mode_for_chinese() -> None:
    terms = index_terms("中华人民共和国")
    assert "中华人民共和国" in terms
    assert "人民" in terms
    assert index_terms("西湖龙井绿茶") == ["西湖", "龙井", "绿茶"]


def test_index_terms_are_the_same_for_query_and_document_side() -> None:
    document = "Stride Red Running Shoes - lightweight running shoes for men"
    query = "red running shoe"
    assert set(index_terms(query)) <= set(index_terms(document))


def test_index_terms_are_deterministic() -> None:
    text = "Organic 西湖龙井绿茶 gift box, premium running shoes"
    assert index_terms(text) == index_terms(text)
