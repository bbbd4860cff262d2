"""Unit tests of services.common.event_loop: the services' event loop setting."""

from __future__ import annotations

import asyncio

import pytest

from services.common.event_loop import event_loop_name, run


def test_uvloop_unless_asked_for_asyncio() -> None:
    assert event_loop_name({}) == "uvloop"
    assert event_loop_name({"SHELFWISE_EVENT_LOOP": " AsyncIO "}) == "asyncio"


def test_an_unknown_loop_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="uvloop, asyncio"):
        event_loop_name({"SHELFWISE_EVENT_LOOP": "trio"})


@pytest.mark.parametrize("name", ["uvloop", "asyncio"])
def test_run_runs_the_coroutine_on_that_loop(name: str) -> None:
    seen = []

    async def main() -> None:
        seen.append(type(asyncio.get_running_loop()).__module__)

    run(main, {"SHELFWISE_EVENT_LOOP": name})
    assert seen and seen[0].startswith("uvloop" if name == "uvloop" else "asyncio")
