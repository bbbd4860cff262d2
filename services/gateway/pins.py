"""Pinned products (merchandising PIN rules) placed into the ranked list: which slice of the
ranked order a page needs around its pins, and the page with the pins in their places.

Retrieval returns pinned products apart from the candidates (never among them), so the result
list is the ranked order with each pin inserted at its position. A pin past the end of a short
list goes right after its last result. Pages stay consistent: page k shows final positions
[offset, offset + size), which hold the pins whose positions fall there and the ranked results
in between, taken from the ranked order at `offset - (pins before the page)`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PlacedPin:
    position: int  # 1-based, in the final list
    result: object  # the gateway's SearchResult for the pinned product


def place(pins: list[tuple[int, object]], ranked_total: int) -> list[PlacedPin]:
    """Pins ((position, result), any order) at their final positions: by position, each at most
    one past the end of the list so far (ranked results plus the pins before it)."""
    placed: list[PlacedPin] = []
    for position, result in sorted(pins, key=lambda pin: pin[0]):
        placed.append(PlacedPin(min(position, ranked_total + len(placed) + 1), result))
    return placed


def ranked_window(offset: int, size: int, pins: list[PlacedPin]) -> tuple[int, int]:
    """(offset, count) of the ranked results the final positions [offset, offset + size) hold."""
    before = sum(1 for pin in pins if pin.position <= offset)
    within = sum(1 for pin in pins if offset < pin.position <= offset + size)
    return offset - before, size - within


def splice(ranked: list, pins: list[PlacedPin], offset: int, size: int) -> list[tuple[int, object, bool]]:
    """(final 1-based position, result, pinned?) of the page: its pins at their positions and the
    ranked results (the slice `ranked_window` named) in the places between, in order."""
    by_position = {pin.position: pin.result for pin in pins}
    page: list[tuple[int, object, bool]] = []
    remaining = iter(ranked)
    for position in range(offset + 1, offset + size + 1):
        if position in by_position:
            page.append((position, by_position[position], True))
            continue
        result = next(remaining, None)
        if result is None:
            # The ranked list ended: later pins were placed right after it (see `place`).
            continue
        page.append((position, result, False))
    return page
