"""The stage calls Search and Recommend share: query understanding (with its fallback), the
shopper's history from events, and retrieval followed by ranking into one page of results.

Every call runs under its stage deadline capped by the request's budget and goes through the
stage's circuit breaker (downstream.py). Query understanding, history and ranking degrade (the
stage is named in the request's `degraded`); retrieval does not: its errors fail the request.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from shelfwise.common.v1 import common_pb2
from shelfwise.events.v1 import events_pb2
from shelfwise.gateway.v1 import gateway_pb2
from shelfwise.query_understanding.v1 import query_understanding_pb2 as qu_pb2
from shelfwise.ranking.v1 import ranking_pb2
from shelfwise.retrieval.v1 import retrieval_pb2

from services.common.logs import RepeatFilter
from services.common.popularity import PopularityCache
from services.common.errors import DeadlineExceeded, Unavailable
from services.common.text import normalize
from services.gateway.config import StageDeadlines
from services.gateway.experiments import ArmPolicy
from services.gateway.page_tokens import encode_page_token
from services.gateway.pins import place, ranked_window, splice
from services.gateway.request_context import RequestContext

log = logging.getLogger(__name__)
log.addFilter(RepeatFilter())  # its warnings are per request: rate limited (services/common/logs.py)

# History read per request: the sequence model looks at the last 50 steps.
HISTORY_LIMIT = 50

RETRIEVAL_MODES = {
    "hybrid": retrieval_pb2.RETRIEVAL_MODE_HYBRID,
    "lexical": retrieval_pb2.RETRIEVAL_MODE_LEXICAL,
    "dense": retrieval_pb2.RETRIEVAL_MODE_DENSE,
}
# Sort keys that leave the order to ranking.
RELEVANCE_SORTS = (common_pb2.SORT_KEY_UNSPECIFIED, common_pb2.SORT_KEY_RELEVANCE)
RANKING_POLICIES = {
    "model": ranking_pb2.RANKING_POLICY_MODEL,
    "formula": ranking_pb2.RANKING_POLICY_FORMULA,
    "retrieval": ranking_pb2.RANKING_POLICY_RETRIEVAL_ORDER,
}


def fallback_understanding(query: str) -> qu_pb2.UnderstandResponse:
    """The query as text only, normalised the way query understanding normalises it."""
    normalized = normalize(query)
    return qu_pb2.UnderstandResponse(
        original_query=query, normalized_query=normalized, corrected_query=normalized, search_text=normalized
    )


@dataclass(frozen=True)
class RankingInputs:
    """What retrieval is asked for, and what ranking is told besides the candidates: the query
    text ("" when there is none to judge relevance on) and the RankRequest preference fields."""

    retrieve: retrieval_pb2.RetrieveRequest
    preferences: dict
    query: str = ""


@dataclass(frozen=True)
class Page:
    results: list
    total: int
    next_token: str
    model_version: str
    # The experiment arm that served the request ("" = none), logged with the impression.
    experiment_arm: str = ""
    # Team-draft interleaving: the arm that contributed each result (empty = not interleaved).
    interleaving_arms: tuple[str, ...] = ()
    # Ranking's category vote of the query, and how many candidates its relevance ranker judged
    # relevant (None: no relevance ranker ranked them).
    query_categories: tuple = ()
    relevant: int | None = None
    # Exploration: the propensity of each result at its position (empty = the ranked order),
    # and the ranked results the page was drawn from.
    propensities: tuple[float, ...] = ()
    exploration_pool: tuple = ()
    exploration_pool_shown: tuple[float, ...] = ()
    # Retrieval's facet counts (common_pb2.Facet), the merchandising rules that changed the
    # answer, and whether the page holds a pinned product.
    facets: tuple = ()
    applied_rule_ids: tuple[str, ...] = ()
    pinned: bool = False


class Stages:
    def __init__(self, downstream, deadlines: StageDeadlines, candidates: int, popularity: PopularityCache | None = None):
        self.downstream = downstream
        self.deadlines = deadlines
        # How many candidates retrieval is asked for.
        self.candidates = candidates
        # Engagement per product, refreshed in the background (popular and cold-start pages);
        # None: no popularity source, those pages are in catalogue order.
        self.popularity = popularity

    async def call(self, context: RequestContext, stage: str, method, request):
        """One call of `stage` (a StageDeadlines field) under its deadline and the request's budget."""
        return await self.downstream.call(
            stage, method, request, context.budget.timeout(getattr(self.deadlines, stage), stage)
        )

    async def understand(self, context: RequestContext, query: str, locale: str) -> qu_pb2.UnderstandResponse:
        try:
            return await self.call(
                context, "query_understanding", self.downstream.query_understanding.Understand,
                qu_pb2.UnderstandRequest(query=query, locale=locale, request_id=context.request_id),
            )
        except (Unavailable, DeadlineExceeded) as error:
            log.warning("query understanding degraded: %s", error)
            context.degraded.append("query_understanding")
            return fallback_understanding(query)

    async def history(self, context: RequestContext) -> list[str]:
        """The shopper's recent products (oldest first) from events; [] for an anonymous
        request, or when events cannot answer in time (then marked degraded)."""
        return [entry.product_id for entry in await self.history_entries(context)]

    async def history_entries(self, context: RequestContext) -> list:
        """The shopper's recent history entries (events_pb2.HistoryEntry: product and strongest
        interaction), oldest first; [] as for `history`."""
        if not context.user_id and not context.session_id:
            return []
        try:
            response = await self.call(
                context, "events", self.downstream.events.ListUserHistory,
                events_pb2.ListUserHistoryRequest(
                    user_id=context.user_id, session_id=context.session_id, limit=HISTORY_LIMIT
                ),
            )
        except (Unavailable, DeadlineExceeded) as error:
            log.warning("shopper history unavailable, answering without it: %s", error)
            context.degraded.append("events.history")
            return []
        return list(response.entries)

    async def retrieve_and_rank(
        self, context: RequestContext, inputs: RankingInputs, offset: int, limit: int, policy: ArmPolicy | None = None
    ) -> Page:
        """Ranks of the candidates retrieval finds for `inputs`, from `offset` on, at most `limit`
        of them. `policy`: an experiment arm's retrieval mode and ranking policy (None = defaults)."""
        retrieve = inputs.retrieve
        rank_policy = {}
        if retrieve.sort.key not in RELEVANCE_SORTS:
            # An explicit sort: retrieval's order is the order; ranking still explains it.
            rank_policy = dict(policy=ranking_pb2.RANKING_POLICY_RETRIEVAL_ORDER)
        elif policy is not None:
            retrieve.mode = RETRIEVAL_MODES[policy.retrieval]
            rank_policy = dict(
                policy=RANKING_POLICIES[policy.ranking], ctr_head_version=policy.ctr_head_version or 0,
                exclude_popularity="popularity" in policy.excluded,
                exclude_personalization="personalization" in policy.excluded,
                exclude_ctr_head="ctr_head" in policy.excluded,
            )
        started = time.perf_counter()
        retrieved = await self.call(context, "retrieval", self.downstream.retrieval.Retrieve, retrieve)
        context.timed("retrieval", started)
        context.degraded.extend(f"retrieval.{component}" for component in retrieved.degraded_components)
        total = len(retrieved.candidates)
        pins = place([(p.position, p) for p in retrieved.pinned], total)
        page_offset, page_size = offset, limit
        offset, limit = ranked_window(offset, limit, pins)

        started = time.perf_counter()
        try:
            ranked = await self.call(
                context, "ranking", self.downstream.ranking.Rank,
                ranking_pb2.RankRequest(
                    request_id=retrieve.request_id,
                    query=inputs.query,
                    candidates=retrieved.candidates,
                    offset=offset,
                    limit=max(limit, 1),  # a page of pins only still asks for the ranking's answer
                    user_id=context.user_id,
                    **inputs.preferences,
                    **rank_policy,
                ),
            )
            items = [(i.product_id, i.score, i.position, i.reasons) for i in ranked.items]
            ranker_version = ranked.model_version
            context.degraded.extend(f"ranking.{component}" for component in ranked.degraded_components)
            query_categories = list(ranked.query_categories)
            relevant = ranked.relevant if ranked.HasField("relevant") else None
        except (Unavailable, DeadlineExceeded) as error:
            log.warning("ranking degraded: %s", error)
            context.degraded.append("ranking")
            # Retrieval's fused order is a sound order on its own.
            window = retrieved.candidates[offset : offset + limit]
            items = [
                (c.product.id, c.fused_score, offset + n + 1,
                 [common_pb2.ScoreReason(feature="fusion", value=c.fused_score, contribution=c.fused_score)])
                for n, c in enumerate(window)
            ]
            ranker_version = "retrieval-order"
            query_categories, relevant = [], None
        context.timed("ranking", started)
        items = items[:limit]
        products = _products_of(retrieved.candidates, {pid for pid, *_ in items})
        results = [
            gateway_pb2.SearchResult(product=products[pid], score=score, position=position, reasons=reasons)
            for pid, score, position, reasons in items
        ]
        if pins:
            results = with_pins(results, pins, page_offset, page_size)
            total += len(pins)
            relevant = None if relevant is None else relevant + len(pins)
        next_offset = page_offset + page_size
        return Page(
            results=results,
            total=total,
            next_token=encode_page_token(next_offset, context.page_scope) if next_offset < total else "",
            model_version=f"text_encoder={retrieved.model_version},ranker={ranker_version}"
            + (f",personal={retrieved.personal_model_version}" if retrieved.personal_model_version else ""),
            query_categories=tuple(query_categories),
            relevant=relevant,
            facets=tuple(retrieved.facets),
            applied_rule_ids=tuple(retrieved.applied_rule_ids),
            pinned=any(page_offset < pin.position <= page_offset + page_size for pin in pins),
        )


def with_pins(results: list, pins, offset: int, size: int) -> list:
    """The page's results with its pinned products in their places (services/gateway/pins.py),
    each pinned one scored 0 with the reason "rule:<id>" (value: its position)."""
    page = []
    for position, result, pinned in splice(results, pins, offset, size):
        if pinned:
            pin = result
            result = gateway_pb2.SearchResult(
                product=pin.product, score=0.0,
                reasons=[common_pb2.ScoreReason(feature=f"rule:{pin.rule_id}", value=pin.position)],
            )
        else:
            copy = gateway_pb2.SearchResult()
            copy.CopyFrom(result)
            result = copy
        result.position = position
        page.append(result)
    return page


def _products_of(candidates, product_ids: set[str]) -> dict[str, common_pb2.Product]:
    """The products of these ids among retrieval's candidates (one candidate per product: retrieval
    fuses by product id). Stops at the last one found: a page sits mostly near the top of
    retrieval's order, and reading every candidate's product cost CPU for ones never shown."""
    products: dict[str, common_pb2.Product] = {}
    for candidate in candidates:
        product = candidate.product
        if product.id in product_ids:
            products[product.id] = product
            if len(products) == len(product_ids):
                break
    return products
