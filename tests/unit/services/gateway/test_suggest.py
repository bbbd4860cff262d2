"""Unit tests of services.gateway.suggest: the request checks, and the one call to query
understanding under the suggest deadline, its breaker and its name."""

from __future__ import annotations

import pytest
from shelfwise.gateway.v1 import gateway_pb2
from shelfwise.query_understanding.v1 import query_understanding_pb2 as qu_pb2

from services.common.errors import InvalidArgument, Unavailable
from services.gateway.config import StageDeadlines
from services.gateway.metrics import GatewayMetrics
from services.gateway.stages import Stages
from services.gateway.suggest import SuggestFlow, suggest_inputs


class FakeQueryUnderstanding:
    async def Suggest(self, request, timeout=None):  # noqa: N802 (the stub's method name)
        return qu_pb2.SuggestResponse(
            suggestions=[qu_pb2.Suggestion(text=request.prefix + "book", source=qu_pb2.SUGGESTION_SOURCE_TITLE)],
            index_version="v1",
        )


class FakeDownstream:
    def __init__(self, error: Exception | None = None):
        self.query_understanding = FakeQueryUnderstanding()
        self.calls = []
        self._error = error

    async def call(self, stage, method, request, timeout):
        self.calls.append((stage, request, timeout))
        if self._error is not None:
            raise self._error
        return await method(request, timeout=timeout)


def flow(downstream) -> SuggestFlow:
    deadlines = StageDeadlines(query_understanding=0.5, retrieval=2.0, ranking=1.0, events=2.0, suggest=0.08)
    return SuggestFlow(Stages(downstream, deadlines, candidates=10), GatewayMetrics())


async def test_suggest_asks_query_understanding_under_the_suggest_deadline_and_passes_its_answer_on() -> None:
    downstream = FakeDownstream()
    response = await flow(downstream).suggest(gateway_pb2.SuggestRequest(prefix="mac", request_id="r1"), remaining=5.0)
    assert [s.text for s in response.suggestions] == ["macbook"]
    assert response.request_id == "r1" and response.index_version == "v1"
    (stage, request, timeout), = downstream.calls
    assert stage == "query_understanding"  # its breaker, and errors named after it
    assert request.limit == 5 and request.request_id == "r1"
    assert 0 < timeout <= 0.08


async def test_a_caller_deadline_shorter_than_the_stage_deadline_caps_the_call() -> None:
    downstream = FakeDownstream()
    await flow(downstream).suggest(gateway_pb2.SuggestRequest(prefix="mac"), remaining=0.05)
    assert downstream.calls[0][2] < 0.05


async def test_query_understanding_down_fails_the_call_naming_it() -> None:
    with pytest.raises(Unavailable, match="^query_understanding: "):
        await flow(FakeDownstream(Unavailable("query_understanding: unavailable: connection refused"))).suggest(
            gateway_pb2.SuggestRequest(prefix="mac"), remaining=None
        )


@pytest.mark.parametrize("fields, message", [
    ({}, "prefix: is required"),
    ({"prefix": "  "}, "prefix: is required"),
    ({"prefix": "x" * 101}, "prefix: must be at most 100 characters"),
    ({"prefix": "mac", "limit": -1}, "limit: must be between 1 and 20, got -1"),
    ({"prefix": "mac", "limit": 21}, "limit: must be between 1 and 20, got 21"),
    ({"prefix": "mac", "locale": "en\n"}, "locale: "),
])
def test_bad_fields_are_refused_before_any_call_naming_the_field(fields, message) -> None:
    with pytest.raises(InvalidArgument) as refused:
        suggest_inputs(gateway_pb2.SuggestRequest(**fields))
    assert str(refused.value).startswith(message)
