"""Unit tests of training.search.misspell: seeded, one-edit-per-long-word keyboard typos."""

from __future__ import annotations

import random

import pytest

from training.search.misspell import EDITS, misspell, misspell_word


def damerau_distance(a: str, b: str) -> int:
    """Optimal-string-alignment distance (insert, delete, substitute, adjacent transpose)."""
    rows = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        rows[i][0] = i
    for j in range(len(b) + 1):
        rows[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            rows[i][j] = min(rows[i - 1][j] + 1, rows[i][j - 1] + 1, rows[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                rows[i][j] = min(rows[i][j], rows[i - 2][j - 2] + 1)
    return rows[-1][-1]


QUERIES = [
    "red running shoes under $50",
    "Pacewell running shoes between 20 and 50 dollars",
    "coffee beans 1kg under $30",
    "KitchenAid stand mixer",
    "noise cancelling headphones",
]


def test_same_seed_gives_the_same_typos() -> None:
    first = [misspell(q, random.Random(7)) for q in QUERIES]
    second = [misspell(q, random.Random(7)) for q in QUERIES]
    assert first == second
    assert first != [misspell(q, random.Random(8)) for q in QUERIES]


def test_every_word_of_four_letters_or_more_gets_exactly_one_edit() -> None:
    rng = random.Random(0)
    for _ in range(50):
        for query in QUERIES:
            typo = misspell(query, rng)
            words, typo_words = query.split(), typo.split()
            assert len(words) == len(typo_words)
            for word, changed in zip(words, typo_words):
                if word.isalpha() and len(word) >= 4:
                    assert damerau_distance(word, changed) == 1, (word, changed)
                else:
                    assert changed == word, (word, changed)


def test_short_words_numbers_glued_units_and_chinese_are_left_alone() -> None:
    text = "red tea 2 pk 500ml iphone15 $50 绿茶 不超过200块"
    assert misspell(text, random.Random(3)) == text


def test_the_first_letter_and_the_case_of_each_letter_are_kept() -> None:
    rng = random.Random(1)
    for _ in range(200):
        typo = misspell("HEADPHONES", rng)
        assert typo[0] == "H" and typo.isupper()


def test_rate_zero_changes_nothing_and_rate_one_changes_every_long_word() -> None:
    query = "sparkling wine from champagne"
    assert misspell(query, random.Random(0), rate=0.0) == query
    changed = misspell(query, random.Random(0), rate=1.0).split()
    assert all(a != b for a, b in zip(query.split(), changed) if len(a) >= 4)


def test_rate_between_zero_and_one_edits_about_that_share_of_words() -> None:
    rng = random.Random(5)
    words = ["headphones"] * 2000
    typo = misspell(" ".join(words), rng, rate=0.3).split()
    share = sum(1 for a, b in zip(words, typo) if a != b) / len(words)
    assert 0.25 < share < 0.35


@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_rate_outside_zero_to_one_is_rejected(rate: float) -> None:
    with pytest.raises(ValueError):
        misspell("running shoes", random.Random(0), rate=rate)


def test_all_four_kinds_of_edit_occur() -> None:
    rng = random.Random(2)
    kinds = set()
    for _ in range(400):
        typo = misspell_word("running", rng)
        if len(typo) == len("running") - 1:
            kinds.add("delete")
        elif len(typo) == len("running") + 1:
            kinds.add("insert")
        elif sorted(typo) == sorted("running"):
            kinds.add("transpose")
        else:
            kinds.add("substitute")
    assert kinds == set(EDITS)
