"""gRPC adapter of the ranking service."""

from __future__ import annotations

from shelfwise.common.v1 import common_pb2
from shelfwise.ranking.v1 import ranking_pb2, ranking_pb2_grpc

from services.common.errors import InvalidArgument
from services.ranking.features import (
    MAX_ID_CHARS,
    QueryPreferences,
    RankingCandidate,
    validate_candidate,
    validate_preferences,
)
from services.ranking.ranker import FORMULA, MAX_CANDIDATES, MODEL, RETRIEVAL_ORDER, Ranker

POLICIES = {
    ranking_pb2.RANKING_POLICY_UNSPECIFIED: MODEL,
    ranking_pb2.RANKING_POLICY_MODEL: MODEL,
    ranking_pb2.RANKING_POLICY_FORMULA: FORMULA,
    ranking_pb2.RANKING_POLICY_RETRIEVAL_ORDER: RETRIEVAL_ORDER,
}
# The query is only logged context here; retrieval's limit for query text applies.
MAX_QUERY_CHARS = 1_000


def _check_request(request: ranking_pb2.RankRequest) -> None:
    if len(request.candidates) > MAX_CANDIDATES:  # before building thousands of candidates
        raise InvalidArgument("candidates", f"must be at most {MAX_CANDIDATES}, got {len(request.candidates)}")
    if len(request.query) > MAX_QUERY_CHARS:
        raise InvalidArgument("query", f"must be at most {MAX_QUERY_CHARS} characters, got {len(request.query)}")
    for name in ("request_id", "user_id"):
        if len(getattr(request, name)) > MAX_ID_CHARS:
            raise InvalidArgument(name, f"must be at most {MAX_ID_CHARS} characters")
    if request.policy not in POLICIES:
        raise InvalidArgument("policy", f"must be a RankingPolicy, got {request.policy}")


class RankingServicer(ranking_pb2_grpc.RankingServiceServicer):
    def __init__(self, ranker: Ranker):
        self._ranker = ranker

    async def Rank(self, request: ranking_pb2.RankRequest, context) -> ranking_pb2.RankResponse:
        _check_request(request)
        candidates = [
            validate_candidate(
                RankingCandidate(
                    product_id=c.product.id,
                    brand=c.product.brand,
                    category=c.product.category,
                    attributes=dict(c.product.attributes),
                    lexical_score=c.lexical_score,
                    dense_score=c.dense_score,
                    fused_score=c.fused_score,
                    lexical_coverage=c.lexical_coverage,
                    personal_score=c.personal_score,
                ),
                f"candidates[{index}]",
            )
            for index, c in enumerate(request.candidates)
        ]
        preferences = validate_preferences(
            QueryPreferences(
                brands=tuple(request.preferred_brands),
                categories=tuple(request.preferred_categories),
                attributes=dict(request.preferred_attributes),
            )
        )
        limit = request.limit if request.HasField("limit") else 10
        ranking = await self._ranker.rank(
            candidates, preferences, request.offset, limit, POLICIES[request.policy], request.ctr_head_version or None
        )
        return ranking_pb2.RankResponse(
            items=[
                ranking_pb2.RankedItem(
                    product_id=item.product_id,
                    score=item.score,
                    position=item.position,
                    reasons=[
                        common_pb2.ScoreReason(feature=name, value=value, contribution=contribution)
                        for name, value, contribution in item.reasons
                    ],
                )
                for item in ranking.items
            ],
            total=ranking.total,
            model_version=ranking.model_version,
            degraded_components=list(ranking.degraded),
        )
