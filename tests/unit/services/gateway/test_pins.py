"""Pinned products placed into the ranked list page by page (services/gateway/pins.py): every
page is a slice of one list, whatever the page size."""

from __future__ import annotations

import pytest

from services.gateway.pins import place, ranked_window, splice


def whole_list(ranked: list[str], pins: list[tuple[int, str]], page_size: int) -> list[tuple[int, str]]:
    placed = place(pins, len(ranked))
    shown, offset = [], 0
    while offset < len(ranked) + len(placed):
        start, count = ranked_window(offset, page_size, placed)
        page = splice(ranked[start:start + count], placed, offset, page_size)
        shown += [(position, item) for position, item, _ in page]
        offset += page_size
    return shown


@pytest.mark.parametrize("page_size", [1, 2, 3, 5, 20])
def test_pages_of_a_pinned_list_are_slices_of_one_list(page_size):
    ranked = [f"r{n}" for n in range(1, 9)]
    shown = whole_list(ranked, [(2, "P2"), (5, "P5"), (6, "P6")], page_size)
    assert shown == list(enumerate(["r1", "P2", "r2", "r3", "P5", "P6", "r4", "r5", "r6", "r7", "r8"], start=1))


def test_a_pin_past_the_end_goes_right_after_the_last_result():
    assert whole_list(["r1", "r2"], [(10, "P10"), (4, "P4")], 3) == [(1, "r1"), (2, "r2"), (3, "P4"), (4, "P10")]


def test_a_page_of_pins_only_needs_no_ranked_results():
    placed = place([(1, "P1"), (2, "P2")], 5)
    assert ranked_window(0, 2, placed) == (0, 0)
    assert ranked_window(2, 2, placed) == (0, 2)
