"""Unit tests of services.gateway.request_context: the deadline budget of a request's stages."""

from __future__ import annotations

import time

import pytest

from services.common.errors import DeadlineExceeded
from services.gateway.request_context import RESERVE_SECONDS, Budget


# --- budget ----------------------------------------------------------------------------------


def test_budget_without_deadline_gives_the_stage_limit() -> None:
    assert Budget.from_remaining(None).timeout(3.0, "retrieval") == 3.0


def test_budget_gives_stage_limit_when_caller_has_more_time() -> None:
    assert Budget.from_remaining(60.0).timeout(0.5, "retrieval") == 0.5


def test_budget_caps_stage_limit_by_callers_remaining_time() -> None:
    timeout = Budget.from_remaining(0.3).timeout(5.0, "retrieval")
    assert 0.2 < timeout <= 0.3 - RESERVE_SECONDS


@pytest.mark.parametrize("remaining", [0.0, -1.0, RESERVE_SECONDS / 2])
def test_budget_raises_deadline_exceeded_when_no_time_is_left(remaining) -> None:
    with pytest.raises(DeadlineExceeded) as caught:
        Budget.from_remaining(remaining).timeout(5.0, "ranking")
    assert caught.value.message.startswith("ranking:")


def test_budget_runs_out_as_time_passes() -> None:
    budget = Budget(deadline=time.monotonic() - 0.001)
    with pytest.raises(DeadlineExceeded):
        budget.timeout(1.0, "query_understanding")
