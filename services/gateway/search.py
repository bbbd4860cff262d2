"""Search: query understanding (with the shopper's history alongside) → retrieval → ranking, under
the request's experiment arm, and for an explored first page a sampled order.

An experiment arm sets the stage policies (query understanding on/off, retrieval mode, ranking
policy, pinned CTR head); an interleaved experiment runs both arms and merges them
(interleaving.py). The response's model_version ends with `experiment=<experiment>/<arm>`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from shelfwise.common.v1 import common_pb2
from shelfwise.events.v1 import events_pb2
from shelfwise.gateway.v1 import gateway_pb2
from shelfwise.query_understanding.v1 import query_understanding_pb2 as qu_pb2
from shelfwise.retrieval.v1 import retrieval_pb2

from services.gateway.experiments import ArmPolicy, Assignment, Experiments
from services.gateway.exploration import ExplorationSettings
from services.gateway.impressions import ImpressionLog
from services.gateway.interleaving import interleaved
from services.gateway.metrics import GatewayMetrics
from services.gateway.page_tokens import decode_search_token, encode_page_token, search_scope
from services.gateway.request_context import RequestContext
from services.gateway.stages import RELEVANCE_SORTS, Page, RankingInputs, Stages, fallback_understanding
from services.gateway.validation import (
    page_size_of,
    query_of,
    request_id_of,
    shopper_ids_of,
    validate_facets_and_sort,
    validate_filters,
)


def merged_filters(requested: common_pb2.Filters, understood: common_pb2.Filters) -> common_pb2.Filters:
    """Hard filters for retrieval: the caller's facets, plus the price the query named (the
    caller's explicit price bounds win over the text's)."""
    merged = common_pb2.Filters()
    merged.CopyFrom(requested)
    for bound in ("min", "max"):
        if not requested.price.HasField(bound) and understood.price.HasField(bound):
            setattr(merged.price, bound, getattr(understood.price, bound))
    if merged.price.HasField("min") and merged.price.HasField("max") and merged.price.min > merged.price.max:
        merged.price.ClearField("min" if not requested.price.HasField("min") else "max")
    return merged


def search_retrieve_request(
    understood: qu_pb2.UnderstandResponse, filters: common_pb2.Filters, request_id: str, limit: int,
    history=(),
) -> retrieval_pb2.RetrieveRequest:
    """What a Search asks retrieval for, given what query understanding made of the query (also
    what `shelfwise train ranker` asks, so the ranker learns from the candidates it will rank)."""
    retrieve = retrieval_pb2.RetrieveRequest(
        request_id=request_id,
        filters=merged_filters(filters, understood.filters),
        limit=limit,
        language=understood.language,
        history_product_ids=history,
    )
    if understood.search_text:
        retrieve.query_text = understood.search_text
        retrieve.translated_text = understood.translated_query
    return retrieve


def search_rank_inputs(understood: qu_pb2.UnderstandResponse) -> dict:
    """The RankRequest fields a Search takes from query understanding: the soft preferences it
    read, and the rendering retrieval searched with."""
    return dict(
        preferred_brands=understood.filters.brands,
        preferred_categories=understood.filters.categories,
        preferred_attributes=understood.filters.attributes,
        translated_query=understood.translated_query if understood.search_text else "",
        prefer_low_price=understood.prefers_low_price,
    )


class SearchFlow:
    def __init__(
        self, stages: Stages, experiments: Experiments, exploration: ExplorationSettings,
        impressions: ImpressionLog, metrics: GatewayMetrics,
    ):
        self._stages = stages
        self._experiments = experiments
        self._exploration = exploration
        self._impressions = impressions
        self._metrics = metrics

    async def search(self, request: gateway_pb2.SearchRequest, remaining: float | None) -> gateway_pb2.SearchResponse:
        query = query_of(request)
        page_size = page_size_of(request)
        scope = search_scope(request)
        offset, skip = decode_search_token(request.page_token, scope)
        request_id = request_id_of(request)
        validate_filters(request.filters)
        validate_facets_and_sort(request)
        sorted_by_relevance = request.sort.key in RELEVANCE_SORTS
        shopper_ids_of(request)
        context = RequestContext.of(request, request_id, remaining, scope)
        assignment = self._experiments.assign(request.user_id, request.session_id, request_id)
        arms = _arm_policies(assignment)

        started = time.perf_counter()
        if any(policy.query_understanding for _, policy in arms):
            understanding = self._stages.understand(context, query, request.locale)
        else:  # no arm of this request uses it: not called, and not degraded either
            understanding = _ready(fallback_understanding(query))
        understood, history = await asyncio.gather(understanding, self._stages.history(context))
        context.timed("query_understanding", started)

        def stage_inputs(policy: ArmPolicy) -> tuple[qu_pb2.UnderstandResponse, RankingInputs]:
            own = understood if policy.query_understanding else fallback_understanding(query)
            retrieve = search_retrieve_request(own, request.filters, request_id, self._stages.candidates, history)
            retrieve.facets.extend(request.facets)
            retrieve.sort.CopyFrom(request.sort)
            return own, RankingInputs(retrieve, search_rank_inputs(own), _ranked_query(own))

        if assignment is not None and assignment.interleaved:
            understood, page = await interleaved(
                self._stages, context, assignment, stage_inputs, (offset, page_size), query
            )
        else:
            _, policy = arms[0]
            understood, inputs = stage_inputs(policy)
            # An explicit sort is the shopper's order: never explored.
            explore = offset == 0 and sorted_by_relevance and self._exploration.explores(request_id, page_size)
            window = self._ranked_window(offset, page_size, skip, explore)
            page = await self._stages.retrieve_and_rank(
                context, inputs, window[0], window[1], policy=policy if assignment else None
            )
            if assignment is not None:
                page = replace(page, experiment_arm=assignment.label)
            if explore and page.pinned:  # merchandised pages keep their pins: the ranked order
                page = _first_page(page, page_size, context.page_scope)
            elif explore and len(page.results) > 1:
                page = self._explored(page, page_size, context)
            elif skip:
                page = _without_explored(page, (offset, page_size), skip, window, scope)
        response = _search_response(context, understood, page, assignment)
        self._metrics.record_response("search", context.timings, context.degraded)
        self._impressions.log(context, events_pb2.SURFACE_SEARCH, query, page, offset)
        return response

    def _ranked_window(self, offset: int, page_size: int, skip: int, explore: bool) -> tuple[int, int]:
        """(offset, limit) of the ranked order a page needs: an explored first page the whole
        pool; a later page of an explored search (`skip`) the ranked order up to where the
        first page's shown products no longer shift it; otherwise just the page."""
        if explore:
            return 0, self._exploration.pool_size(page_size)
        if skip:
            shown = bin(skip).count("1")
            remainder = offset - shown  # the page's offset in the ranked order without them
            if remainder + shown >= skip.bit_length():
                return remainder + shown, page_size
            return 0, remainder + page_size + shown
        return offset, page_size

    def _explored(self, page: Page, page_size: int, context: RequestContext) -> Page:
        """A page drawn from the ranked pool in a sampled order (services/gateway/exploration.py),
        with the propensity of each product at its position and the pool logged with it."""
        pool = page.results
        shown = min(page_size, len(pool))
        drawn = self._exploration.sample(len(pool), shown, context.request_id)
        results = []
        for position, rank in enumerate(drawn.order):
            result = gateway_pb2.SearchResult()
            result.CopyFrom(pool[rank])
            result.position = position + 1
            results.append(result)
        skip = sum(1 << rank for rank in drawn.order)
        total = max(page.total, len(pool))
        temperature = f"{self._exploration.temperature:g}"
        return replace(
            page, results=results, propensities=tuple(drawn.propensities), exploration_pool=tuple(pool),
            exploration_pool_shown=tuple(drawn.shown_probabilities),
            next_token=encode_page_token(shown, context.page_scope, skip) if shown < total else "",
            model_version=f"{page.model_version},exploration=plackett-luce(T={temperature},depth={len(pool)})",
        )


def _search_response(
    context: RequestContext, understood: qu_pb2.UnderstandResponse, page: Page, assignment: Assignment | None
) -> gateway_pb2.SearchResponse:
    experiment = f",experiment={assignment.label}" if assignment is not None else ""
    notes = list(understood.notes)
    if page.relevant == 0 and page.results:
        notes.append("no product matches this query well: these are the closest ones")
    return gateway_pb2.SearchResponse(
        request_id=context.request_id,
        results=page.results,
        next_page_token=page.next_token,
        total_size=page.total if page.relevant is None else page.relevant,
        interpretation=gateway_pb2.QueryInterpretation(
            corrected_query=understood.corrected_query,
            language=understood.language,
            extracted_filters=understood.filters,
            search_text=understood.search_text,
            translated_text=understood.translated_query,
            predicted_categories=page.query_categories,
            prefers_low_price=understood.prefers_low_price,
        ),
        notes=notes,
        model_version=f"{page.model_version},query_understanding={understood.model_version or 'fallback'}"
        + experiment,
        timings=context.timings,
        degraded_stages=context.degraded,
        facets=page.facets,
        applied_rule_ids=page.applied_rule_ids,
    )


def _first_page(page: Page, page_size: int, scope: str) -> Page:
    """The first `page_size` results of a ranked pool (an exploration window not explored)."""
    shown = page.results[:page_size]
    return replace(page, results=shown, next_token=encode_page_token(len(shown), scope) if len(shown) < page.total else "")


def _without_explored(page: Page, requested: tuple[int, int], skip: int, window: tuple[int, int], scope: str) -> Page:
    """A later page of an explored search: the ranked order without the products the first page
    showed (pool ranks in `skip`), cut at the requested page; positions continue from it.
    `requested`: (offset, page size)."""
    offset, page_size = requested
    results = page.results
    if window[0] == 0:  # the ranked order from the top: drop the shown ranks, then cut the page
        kept = [r for rank, r in enumerate(results) if not skip >> rank & 1]
        results = kept[offset - bin(skip).count("1"):][:page_size]
    renumbered = []
    for n, result in enumerate(results):
        copy = gateway_pb2.SearchResult()
        copy.CopyFrom(result)
        copy.position = offset + n + 1
        renumbered.append(copy)
    next_offset = offset + page_size  # without the shown products, as many remain after it as without skipping
    return replace(page, results=renumbered,
                   next_token=encode_page_token(next_offset, scope, skip) if next_offset < page.total else "")


def _arm_policies(assignment: Assignment | None) -> list[tuple[str, ArmPolicy]]:
    """(arm name, policy) of each arm that serves the request: one, or two when interleaved;
    the defaults when the request is in no experiment."""
    if assignment is None:
        return [("", ArmPolicy())]
    if assignment.interleaved:
        return [(arm.name, arm.policy) for arm in assignment.experiment.arms]
    return [(assignment.arm.name, assignment.arm.policy)]


def _ranked_query(understood: qu_pb2.UnderstandResponse) -> str:
    """The query ranking is told about: none when there is no text to match (a query that was
    all price, "under $50", browses by its filters), so relevance is not judged on it."""
    return understood.corrected_query if understood.search_text else ""


async def _ready(value):
    return value
