"""Suggest: completions as the shopper types, from query understanding's autocomplete index.

One call, checked here first (services/common/suggest_request.py, the checks query
understanding makes too, so a bad field is refused under the caller's name without a hop). It runs under the `suggest` stage deadline
(SHELFWISE_DEADLINE_SUGGEST_SECONDS, 0.1 s by default: a completion that comes after the next
keystroke is useless) capped by the caller's, through query understanding's circuit breaker:
Suggest and Search's understanding stage call the same service, so one verdict on its health
serves both, and a Suggest that runs out of its short deadline is no verdict at all (the breaker
judges deadlines only for calls given the service's full stage deadline). There is no honest
fallback: the gateway holds no catalogue and no query log, so when query understanding is down
the call fails with UNAVAILABLE ("query_understanding: ..."), and when it is slow with
DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import time

from shelfwise.gateway.v1 import gateway_pb2
from shelfwise.query_understanding.v1 import query_understanding_pb2 as qu_pb2

from services.common.suggest_request import suggest_inputs
from services.gateway.metrics import GatewayMetrics
from services.gateway.request_context import Budget, elapsed_ms
from services.gateway.stages import Stages
from services.gateway.validation import request_id_of

STAGE = "query_understanding"

class SuggestFlow:
    def __init__(self, stages: Stages, metrics: GatewayMetrics):
        self._stages = stages
        self._metrics = metrics

    async def suggest(self, request: gateway_pb2.SuggestRequest, remaining: float | None) -> gateway_pb2.SuggestResponse:
        prefix, limit = suggest_inputs(request)
        request_id = request_id_of(request)
        downstream = self._stages.downstream
        timeout = Budget.from_remaining(remaining).timeout(self._stages.deadlines.suggest, STAGE)
        started = time.perf_counter()
        answer = await downstream.call(
            STAGE, downstream.query_understanding.Suggest,
            qu_pb2.SuggestRequest(prefix=prefix, limit=limit, locale=request.locale, request_id=request_id),
            timeout,
        )
        self._metrics.record_response("suggest", [gateway_pb2.StageTiming(stage=STAGE, milliseconds=elapsed_ms(started))], [])
        return gateway_pb2.SuggestResponse(
            request_id=request_id, suggestions=answer.suggestions, index_version=answer.index_version
        )
