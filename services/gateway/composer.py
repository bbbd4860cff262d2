"""Search, Recommend and Track composed from the stage services.

Search: query understanding → retrieval → ranking → (in the background) impression logging.
Each stage runs under its own deadline, capped by what is left of the caller's. A failed query
understanding or ranking stage degrades the answer (raw text / retrieval order) and says so in
`degraded_stages`; retrieval is the one stage without which there is nothing to show: when
it is down the request fails with UNAVAILABLE ("retrieval: ...") and when it is too slow with
DEADLINE_EXCEEDED, both before the caller's deadline (the retrieval stage deadline caps the
wait). No honest fallback exists for it: the gateway holds no catalogue, and a cached or
popular page would not answer the query. Every stage goes through a circuit breaker
(downstream.py): after repeated failures a dead stage fails at once ("<stage>: circuit open"),
so a degraded answer, or retrieval's UNAVAILABLE, comes without waiting out the stage deadline.

Personalisation reads the shopper's history from events at request time (in parallel with
query understanding), so a click logged through Track shapes the very next response without a
retrain. Search uses it for the personal_affinity ranking feature; Recommend FOR_USER and
COMPLETE_CART use it as the sequence the model continues. With no history, or with events
unreachable ("events.history" in `degraded_stages`), recommendations fall back to what is
popular (in the requested category) and search to non-personal ranking.
Impression logging never blocks or fails a search; Track waits briefly for the impression of
the request it refers to, so a fast click is not rejected as unknown.

Experiments (`services.gateway.experiments`, from SHELFWISE_EXPERIMENTS) apply to Search: the
request's arm sets the stage policies (query understanding on/off, retrieval mode, ranking
policy, pinned CTR head), or, for an interleaved experiment, both arms run and their rankings
are merged by team draft. The impression records the arm (and, interleaved, the arm of every
position); the response's model_version ends with `experiment=<experiment>/<arm>`.
Recommend is not under experiment.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import time
import unicodedata
import uuid
from dataclasses import dataclass, replace

from google.protobuf.timestamp_pb2 import Timestamp
from shelfwise.common.v1 import common_pb2
from shelfwise.events.v1 import events_pb2
from shelfwise.gateway.v1 import gateway_pb2
from shelfwise.query_understanding.v1 import query_understanding_pb2 as qu_pb2
from shelfwise.ranking.v1 import ranking_pb2
from shelfwise.retrieval.v1 import retrieval_pb2

from services.common.errors import DeadlineExceeded, InvalidArgument, NotFound, Unavailable
from services.gateway.metrics import GatewayMetrics
from services.gateway.config import StageDeadlines
from services.gateway.event_buffer import ImpressionBuffer
from services.gateway.experiments import ArmPolicy, Assignment, Experiments, interleaving_seed, team_draft
from services.gateway.exploration import MAX_DEPTH, ExplorationSettings

log = logging.getLogger(__name__)

MAX_QUERY_CHARS = 512
DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 100
MAX_TRACK_EVENTS = 500
# History read per request: the sequence model looks at the last 50 steps.
HISTORY_LIMIT = 50
MAX_HISTORY_IDS = 200
# Deeper than any candidate list (retrieval returns at most 2000); also keeps offsets in int32.
MAX_OFFSET = 100_000
MAX_ID_CHARS = 128
# Left for the gateway's own work after the last stage, so it answers before the caller's deadline.
RESERVE_SECONDS = 0.02
IMPRESSION_WAIT_SECONDS = 2.0


@dataclass
class Budget:
    """Time left under the caller's deadline (None = no deadline)."""

    deadline: float | None

    @classmethod
    def from_remaining(cls, remaining: float | None) -> "Budget":
        return cls(None if remaining is None else time.monotonic() + remaining)

    def timeout(self, stage_limit: float, stage: str) -> float:
        if self.deadline is None:
            return stage_limit
        left = self.deadline - time.monotonic() - RESERVE_SECONDS
        if left <= 0:
            raise DeadlineExceeded(f"{stage}: no time left under the caller's deadline")
        return min(stage_limit, left)


def encode_page_token(offset: int, skip: int = 0) -> str:
    """`skip`: the pool ranks an explored first page showed (a bit mask; services/gateway/
    exploration.py), which later pages leave out of the ranked order."""
    text = f"offset:{offset}" + (f":skip:{skip:x}" if skip else "")
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_page_token(token: str) -> int:
    return decode_search_token(token)[0]


def decode_search_token(token: str) -> tuple[int, int]:
    """(offset, skip mask) of a next_page_token; (0, 0) for none."""
    if not token:
        return 0, 0
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        parts = text.split(":")
        offset = int(parts[1])
        skip = int(parts[3], 16) if len(parts) == 4 and parts[2] == "skip" else 0
        if (parts[0] != "offset" or len(parts) not in (2, 4) or not 0 <= offset <= MAX_OFFSET
                or not 0 <= skip < 1 << MAX_DEPTH or bin(skip).count("1") > offset):
            raise ValueError
        return offset, skip
    except (ValueError, IndexError, UnicodeDecodeError):
        raise InvalidArgument("page_token", "is not a token returned as next_page_token") from None


def page_size_of(request) -> int:
    size = request.page_size if request.HasField("page_size") else DEFAULT_PAGE_SIZE
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise InvalidArgument("page_size", f"must be between 1 and {MAX_PAGE_SIZE}, got {size}")
    return size


def request_id_of(request) -> str:
    if not request.request_id:
        return uuid.uuid4().hex
    if len(request.request_id) > MAX_ID_CHARS or not request.request_id.isprintable():
        raise InvalidArgument("request_id", f"must be 1-{MAX_ID_CHARS} printable characters")
    return request.request_id


def shopper_ids_of(request) -> None:
    for name in ("user_id", "session_id"):
        value = getattr(request, name)
        if len(value) > MAX_ID_CHARS or (value and not value.isprintable()):
            raise InvalidArgument(name, f"must be at most {MAX_ID_CHARS} printable characters")


def product_ids_of(values, field: str, maximum: int, required: bool = False) -> list[str]:
    ids = list(values)
    if required and not ids:
        raise InvalidArgument(field, f"must list 1-{maximum} product ids")
    if len(ids) > maximum:
        raise InvalidArgument(field, f"must list at most {maximum} product ids, got {len(ids)}")
    for index, product_id in enumerate(ids):
        if not product_id or len(product_id) > MAX_ID_CHARS:
            raise InvalidArgument(f"{field}[{index}]", f"must be 1-{MAX_ID_CHARS} characters")
    return ids


def validate_filters(filters: common_pb2.Filters, where: str = "filters") -> None:
    for bound in ("min", "max"):
        if filters.price.HasField(bound):
            value = getattr(filters.price, bound)
            if not (value >= 0 and value != float("inf")):
                raise InvalidArgument(f"{where}.price.{bound}", f"must be a finite number >= 0, got {value}")
    if filters.price.HasField("min") and filters.price.HasField("max") and filters.price.min > filters.price.max:
        raise InvalidArgument(f"{where}.price", "min must not exceed max")


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


def fallback_understanding(query: str) -> qu_pb2.UnderstandResponse:
    normalized = " ".join(unicodedata.normalize("NFKC", query).casefold().split())
    return qu_pb2.UnderstandResponse(
        original_query=query, normalized_query=normalized, corrected_query=normalized, search_text=normalized
    )


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


RETRIEVAL_MODES = {
    "hybrid": retrieval_pb2.RETRIEVAL_MODE_HYBRID,
    "lexical": retrieval_pb2.RETRIEVAL_MODE_LEXICAL,
    "dense": retrieval_pb2.RETRIEVAL_MODE_DENSE,
}
RANKING_POLICIES = {
    "model": ranking_pb2.RANKING_POLICY_MODEL,
    "formula": ranking_pb2.RANKING_POLICY_FORMULA,
    "retrieval": ranking_pb2.RANKING_POLICY_RETRIEVAL_ORDER,
}


class Composer:
    def __init__(
        self, downstream, deadlines: StageDeadlines, candidates: int, experiments: Experiments | None = None,
        exploration: ExplorationSettings = ExplorationSettings(),
    ):
        self._downstream = downstream
        self._deadlines = deadlines
        self._candidates = candidates
        self._experiments = experiments or Experiments()
        self._exploration = exploration
        self._pending_impressions: dict[str, asyncio.Task] = {}
        self.impressions_failed = 0
        self._metrics = GatewayMetrics()
        self._impression_buffer = ImpressionBuffer(
            lambda impressions: self._downstream.call(
                "events",
                self._downstream.events.LogEvents,
                events_pb2.LogEventsRequest(impressions=impressions),
                self._deadlines.events,
            ),
            self._metrics,
        )

    # --- Search -------------------------------------------------------------------------------

    async def search(self, request: gateway_pb2.SearchRequest, remaining: float | None) -> gateway_pb2.SearchResponse:
        query = request.query
        if len(query) > MAX_QUERY_CHARS:
            raise InvalidArgument("query", f"must be at most {MAX_QUERY_CHARS} characters, got {len(query)}")
        if not query.strip():
            raise InvalidArgument("query", "must not be empty or whitespace")
        page_size = page_size_of(request)
        offset, skip = decode_search_token(request.page_token)
        request_id = request_id_of(request)
        validate_filters(request.filters)
        shopper_ids_of(request)
        budget = Budget.from_remaining(remaining)
        timings: list[gateway_pb2.StageTiming] = []
        degraded: list[str] = []
        assignment = self._experiments.assign(request.user_id, request.session_id, request_id)
        arms = _arm_policies(assignment)

        started = time.perf_counter()
        if any(policy.query_understanding for _, policy in arms):
            understanding = self._understand(query, request, request_id, budget, degraded)
        else:  # no arm of this request uses it: not called, and not degraded either
            understanding = _ready(fallback_understanding(query))
        understood, history = await asyncio.gather(
            understanding, self._history(request.user_id, request.session_id, budget, degraded)
        )
        timings.append(gateway_pb2.StageTiming(stage="query_understanding", milliseconds=_ms(started)))

        def stage_inputs(policy: ArmPolicy):
            own = understood if policy.query_understanding else fallback_understanding(query)
            retrieve = search_retrieve_request(own, request.filters, request_id, self._candidates, history)
            return own, retrieve, search_rank_inputs(own)

        if assignment is not None and assignment.interleaved:
            understood, page = await self._interleaved(
                assignment, arms, stage_inputs, offset, page_size, request.user_id, budget, timings, degraded, query
            )
        else:
            _, policy = arms[0]
            understood, retrieve, preferences = stage_inputs(policy)
            explore = offset == 0 and self._exploration.explores(request_id, page_size)
            window = self._ranked_window(offset, page_size, skip, explore)
            page = await self._retrieve_and_rank(
                retrieve, preferences, window[0], window[1], request.user_id, budget, timings, degraded,
                query=_ranked_query(understood), policy=policy if assignment else None,
            )
            if assignment is not None:
                page = replace(page, experiment_arm=assignment.label)
            if explore and len(page.results) > 1:
                page = self._explored(page, page_size, request_id)
            elif skip:
                page = _without_explored(page, offset, page_size, skip, window)
        experiment = f",experiment={assignment.label}" if assignment is not None else ""
        notes = list(understood.notes)
        if page.relevant == 0 and page.results:
            notes.append("no product matches this query well: these are the closest ones")
        response = gateway_pb2.SearchResponse(
            request_id=request_id,
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
            timings=timings,
            degraded_stages=degraded,
        )
        self._count_degraded("search", degraded)
        self._metrics.record_stages("search", timings)
        self._log_impression(request_id, request, events_pb2.SURFACE_SEARCH, query, page, offset)
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

    def _explored(self, page: "_Page", page_size: int, request_id: str) -> "_Page":
        """A page drawn from the ranked pool in a sampled order (services/gateway/exploration.py),
        with the propensity of each product at its position and the pool logged with it."""
        pool = page.results
        shown = min(page_size, len(pool))
        drawn = self._exploration.sample(len(pool), shown, request_id)
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
            next_token=encode_page_token(shown, skip) if shown < total else "",
            model_version=f"{page.model_version},exploration=plackett-luce(T={temperature},depth={len(pool)})",
        )

    async def _interleaved(
        self, assignment: Assignment, arms, stage_inputs, offset, page_size, user_id, budget, timings, degraded, query
    ) -> tuple[qu_pb2.UnderstandResponse, "_Page"]:
        """Both arms rank the top offset + page_size; team draft merges them (seeded by the
        unit and the query, so every page of one shopper's result list comes from the same
        merged list) and the requested page is cut from the merge. Past the deepest page
        ranking returns, only the control arm is served, recorded as that arm."""
        depth = offset + page_size
        experiment = assignment.experiment
        if depth > MAX_PAGE_SIZE:
            policy = experiment.arm(experiment.control).policy
            understood, retrieve, preferences = stage_inputs(policy)
            page = await self._retrieve_and_rank(
                retrieve, preferences, offset, page_size, user_id, budget, timings, degraded,
                query=_ranked_query(understood), policy=policy,
            )
            return understood, replace(page, experiment_arm=experiment.label(experiment.control))
        inputs = {name: stage_inputs(policy) for name, policy in arms}
        arm_timings = {name: [] for name, _ in arms}
        pages = await asyncio.gather(*(
            self._retrieve_and_rank(
                retrieve, preferences, 0, depth, user_id, budget, arm_timings[name], degraded,
                query=_ranked_query(understood), policy=policy,
            )
            for (name, policy), (understood, retrieve, preferences) in zip(arms, inputs.values())
        ))
        for name, _ in arms:
            timings.extend(gateway_pb2.StageTiming(stage=f"{t.stage}[{name}]", milliseconds=t.milliseconds)
                           for t in arm_timings[name])
        by_arm = dict(zip((name for name, _ in arms), pages))
        rng = random.Random(interleaving_seed(experiment, assignment.unit, query))
        merged = team_draft({name: [r.product.id for r in page.results] for name, page in by_arm.items()}, depth, rng)
        found = {name: {r.product.id: r for r in page.results} for name, page in by_arm.items()}
        results, contributors = [], []
        for n, (product_id, arm) in enumerate(merged[offset:depth]):
            result = gateway_pb2.SearchResult()
            result.CopyFrom(found[arm][product_id])
            result.position = offset + n + 1
            results.append(result)
            contributors.append(arm)
        total = max(page.total for page in pages)
        next_offset = offset + page_size
        version = ";".join(f"{name}:{page.model_version}" for name, page in by_arm.items())
        page = _Page(
            results=results,
            total=total,
            next_token=encode_page_token(next_offset) if next_offset < total else "",
            model_version=f"interleaved({version})",
            experiment_arm=assignment.label,
            interleaving_arms=tuple(contributors),
        )
        # What the shopper's query was understood as: the first arm that understands it.
        shown = next((inputs[name][0] for name, policy in arms if policy.query_understanding), inputs[arms[0][0]][0])
        return shown, page

    async def _understand(self, query, request, request_id, budget, degraded) -> qu_pb2.UnderstandResponse:
        try:
            return await self._downstream.call(
                "query_understanding",
                self._downstream.query_understanding.Understand,
                qu_pb2.UnderstandRequest(query=query, locale=request.locale, request_id=request_id),
                budget.timeout(self._deadlines.query_understanding, "query_understanding"),
            )
        except (Unavailable, DeadlineExceeded) as error:
            log.warning("query understanding degraded: %s", error)
            degraded.append("query_understanding")
            return fallback_understanding(query)

    async def _history(self, user_id: str, session_id: str, budget: Budget, degraded: list[str]) -> list[str]:
        """The shopper's recent products (oldest first) from events; [] for an anonymous
        request, or when events cannot answer in time (then marked degraded)."""
        if not user_id and not session_id:
            return []
        try:
            response = await self._downstream.call(
                "events",
                self._downstream.events.ListUserHistory,
                events_pb2.ListUserHistoryRequest(user_id=user_id, session_id=session_id, limit=HISTORY_LIMIT),
                budget.timeout(self._deadlines.events, "events"),
            )
        except (Unavailable, DeadlineExceeded) as error:
            log.warning("shopper history unavailable, answering without it: %s", error)
            degraded.append("events.history")
            return []
        return [entry.product_id for entry in response.entries]

    # --- Recommend ----------------------------------------------------------------------------

    async def recommend(
        self, request: gateway_pb2.RecommendRequest, remaining: float | None
    ) -> gateway_pb2.RecommendResponse:
        page_size = page_size_of(request)
        offset = decode_page_token(request.page_token)
        request_id = request_id_of(request)
        validate_filters(request.filters)
        shopper_ids_of(request)
        supplied_history = product_ids_of(request.history_product_ids, "history_product_ids", MAX_HISTORY_IDS)
        budget = Budget.from_remaining(remaining)
        filters = common_pb2.Filters()
        filters.CopyFrom(request.filters)
        retrieve = retrieval_pb2.RetrieveRequest(request_id=request_id, limit=self._candidates)
        timings: list[gateway_pb2.StageTiming] = []
        degraded: list[str] = []
        if request.mode in (gateway_pb2.RECOMMEND_MODE_FOR_USER, gateway_pb2.RECOMMEND_MODE_COMPLETE_CART):
            return await self._recommend_personal(
                request, request_id, supplied_history, filters, offset, page_size, budget, timings, degraded
            )
        if request.mode == gateway_pb2.RECOMMEND_MODE_SIMILAR_ITEMS:
            if not request.product_id or len(request.product_id) > MAX_ID_CHARS:
                raise InvalidArgument("product_id", "is required (1-128 characters) for RECOMMEND_MODE_SIMILAR_ITEMS")
            retrieve.similar_to_product_id = request.product_id
            seed = request.product_id
            found = await self._downstream.call(
                "retrieval",
                self._downstream.retrieval.GetProducts,
                retrieval_pb2.GetProductsRequest(product_ids=[request.product_id]),
                budget.timeout(self._deadlines.retrieval, "retrieval"),
            )
            if not found.products:
                raise NotFound(f"product_id: no product with id {request.product_id!r}")
            # "Similar" to a shopper means the same kind of thing first: same category ranks higher.
            preferences = dict(preferred_categories=[found.products[0].category])
        elif request.mode == gateway_pb2.RECOMMEND_MODE_POPULAR_IN_CATEGORY:
            if not request.category or len(request.category) > 200:
                raise InvalidArgument("category", "is required (1-200 characters) for RECOMMEND_MODE_POPULAR_IN_CATEGORY")
            filters.categories[:] = [request.category]
            retrieve.limit = 2_000  # the whole category (up to 2000) so popularity decides the order
            seed = request.category
            preferences = {}
        else:
            raise InvalidArgument(
                "mode",
                "must be RECOMMEND_MODE_SIMILAR_ITEMS, RECOMMEND_MODE_POPULAR_IN_CATEGORY, "
                "RECOMMEND_MODE_FOR_USER or RECOMMEND_MODE_COMPLETE_CART",
            )
        retrieve.filters.CopyFrom(filters)
        page = await self._retrieve_and_rank(
            retrieve, preferences, offset, page_size, request.user_id, budget, timings, degraded, query=""
        )
        return self._recommend_response(request, request_id, seed, page, offset, timings, degraded)

    async def _recommend_personal(
        self, request, request_id, supplied_history, filters, offset, page_size, budget, timings, degraded
    ) -> gateway_pb2.RecommendResponse:
        """FOR_USER and COMPLETE_CART: the history (supplied, else from events) followed by the
        cart is the sequence the model continues; cart products are never recommended. When
        nothing in it is known (cold start), the most popular products (in `category`)."""
        cart: list[str] = []
        if request.mode == gateway_pb2.RECOMMEND_MODE_COMPLETE_CART:
            cart = product_ids_of(request.cart_product_ids, "cart_product_ids", MAX_HISTORY_IDS, required=True)
        if request.category:
            if len(request.category) > 200:
                raise InvalidArgument("category", "must be at most 200 characters")
            filters.categories[:] = [request.category]
        started = time.perf_counter()
        history = supplied_history or await self._history(request.user_id, request.session_id, budget, degraded)
        timings.append(gateway_pb2.StageTiming(stage="history", milliseconds=_ms(started)))
        sequence = (history + cart)[-MAX_HISTORY_IDS:]
        seed = "cart" if cart else "user"
        page = None
        if sequence:
            retrieve = retrieval_pb2.RetrieveRequest(
                request_id=request_id,
                filters=filters,
                limit=self._candidates,
                history_product_ids=sequence,
                exclude_product_ids=cart,
            )
            page = await self._retrieve_and_rank(
                retrieve, {}, offset, page_size, request.user_id, budget, timings, degraded, query=""
            )
        if page is None or page.total == 0:
            seed = "popular"
            page = await self._recommend_popular(request_id, filters, cart, offset, page_size, request.user_id, budget, timings, degraded)
        return self._recommend_response(request, request_id, seed, page, offset, timings, degraded)

    async def _recommend_popular(
        self, request_id, filters, exclude, offset, page_size, user_id, budget, timings, degraded
    ) -> "_Page":
        """Cold start: the most engaged-with products first (from events), then the rest of the
        catalogue matching the filters; ranking orders them (popularity is one of its features)."""
        try:
            popular = await self._downstream.call(
                "events",
                self._downstream.events.ListPopularProducts,
                events_pb2.ListPopularProductsRequest(limit=self._candidates),
                budget.timeout(self._deadlines.events, "events"),
            )
            preferred = [p.product_id for p in popular.products]
        except (Unavailable, DeadlineExceeded) as error:
            log.warning("popular products unavailable, browsing the catalogue: %s", error)
            degraded.append("events.popular")
            preferred = []
        retrieve = retrieval_pb2.RetrieveRequest(
            request_id=request_id,
            filters=filters,
            limit=self._candidates,
            exclude_product_ids=exclude,
            preferred_product_ids=preferred,
        )
        return await self._retrieve_and_rank(retrieve, {}, offset, page_size, user_id, budget, timings, degraded, query="")

    def _recommend_response(self, request, request_id, seed, page, offset, timings, degraded) -> gateway_pb2.RecommendResponse:
        response = gateway_pb2.RecommendResponse(
            request_id=request_id,
            results=page.results,
            next_page_token=page.next_token,
            total_size=page.total,
            model_version=page.model_version,
            timings=timings,
            degraded_stages=degraded,
        )
        self._count_degraded("recommend", degraded)
        self._metrics.record_stages("recommend", timings)
        self._log_impression(request_id, request, events_pb2.SURFACE_RECOMMEND, seed, page, offset)
        return response

    # --- shared: retrieval + ranking ------------------------------------------------------------

    async def _retrieve_and_rank(
        self, retrieve, preferences, offset, page_size, user_id, budget, timings, degraded, query,
        policy: ArmPolicy | None = None,
    ) -> "_Page":
        """`policy`: an experiment arm's retrieval mode and ranking policy (None = defaults)."""
        rank_policy = {}
        if policy is not None:
            retrieve.mode = RETRIEVAL_MODES[policy.retrieval]
            rank_policy = dict(
                policy=RANKING_POLICIES[policy.ranking], ctr_head_version=policy.ctr_head_version or 0,
                exclude_popularity="popularity" in policy.excluded,
                exclude_personalization="personalization" in policy.excluded,
                exclude_ctr_head="ctr_head" in policy.excluded,
            )
        started = time.perf_counter()
        retrieved = await self._downstream.call(
            "retrieval",
            self._downstream.retrieval.Retrieve,
            retrieve,
            budget.timeout(self._deadlines.retrieval, "retrieval"),
        )
        timings.append(gateway_pb2.StageTiming(stage="retrieval", milliseconds=_ms(started)))
        degraded.extend(f"retrieval.{component}" for component in retrieved.degraded_components)
        products = {c.product.id: c.product for c in retrieved.candidates}
        total = len(retrieved.candidates)

        started = time.perf_counter()
        try:
            ranked = await self._downstream.call(
                "ranking",
                self._downstream.ranking.Rank,
                ranking_pb2.RankRequest(
                    request_id=retrieve.request_id,
                    query=query,
                    candidates=retrieved.candidates,
                    offset=offset,
                    limit=page_size,
                    user_id=user_id,
                    **preferences,
                    **rank_policy,
                ),
                budget.timeout(self._deadlines.ranking, "ranking"),
            )
            items = [(i.product_id, i.score, i.position, i.reasons) for i in ranked.items]
            ranker_version = ranked.model_version
            degraded.extend(f"ranking.{component}" for component in ranked.degraded_components)
            query_categories = list(ranked.query_categories)
            relevant = ranked.relevant if ranked.HasField("relevant") else None
        except (Unavailable, DeadlineExceeded) as error:
            log.warning("ranking degraded: %s", error)
            degraded.append("ranking")
            # Retrieval's fused order is a sound order on its own.
            window = retrieved.candidates[offset : offset + page_size]
            items = [
                (c.product.id, c.fused_score, offset + n + 1,
                 [common_pb2.ScoreReason(feature="fusion", value=c.fused_score, contribution=c.fused_score)])
                for n, c in enumerate(window)
            ]
            ranker_version = "retrieval-order"
            query_categories, relevant = [], None
        timings.append(gateway_pb2.StageTiming(stage="ranking", milliseconds=_ms(started)))
        results = [
            gateway_pb2.SearchResult(product=products[pid], score=score, position=position, reasons=reasons)
            for pid, score, position, reasons in items
        ]
        next_offset = offset + page_size
        return _Page(
            results=results,
            total=total,
            next_token=encode_page_token(next_offset) if next_offset < total else "",
            model_version=f"text_encoder={retrieved.model_version},ranker={ranker_version}"
            + (f",personal={retrieved.personal_model_version}" if retrieved.personal_model_version else ""),
            query_categories=tuple(query_categories),
            relevant=relevant,
        )

    def _count_degraded(self, rpc: str, degraded: list[str]) -> None:
        for stage in degraded:
            self._metrics.degraded_responses.add(1, {"rpc": rpc, "stage": stage})

    # --- impressions and tracking ---------------------------------------------------------------

    def _log_impression(self, request_id, request, surface, query, page: "_Page", offset: int) -> None:
        # A page with no results is logged too (no products): zero-result searches are what
        # search analytics and experiment reports most need to see.
        occurred_at = Timestamp()
        occurred_at.GetCurrentTime()
        impression = events_pb2.Impression(
            event_id=f"impression-{request_id}",
            request_id=request_id,
            user_id=request.user_id,
            session_id=request.session_id,
            surface=surface,
            query=query[:2000],
            product_ids=[r.product.id for r in page.results],
            first_position=offset + 1,
            model_version=page.model_version[:128],
            experiment_arm=page.experiment_arm,
            occurred_at=occurred_at,
            features=_served_features(page.results),
            interleaving_arms=list(page.interleaving_arms),
            propensities=list(page.propensities),
            exploration_pool=[r.product.id for r in page.exploration_pool],
            exploration_pool_features=_served_features(page.exploration_pool),
            exploration_pool_shown=list(page.exploration_pool_shown),
        )
        task = asyncio.create_task(self._send_impression(impression))
        self._pending_impressions[request_id] = task
        self._metrics.impressions_pending.add(1)
        task.add_done_callback(lambda _: self._impression_done(request_id))

    def _impression_done(self, request_id: str) -> None:
        self._pending_impressions.pop(request_id, None)
        self._metrics.impressions_pending.add(-1)

    async def _send_impression(self, impression: events_pb2.Impression) -> None:
        try:
            await self._downstream.call(
                "events",
                self._downstream.events.LogEvents,
                events_pb2.LogEventsRequest(impressions=[impression]),
                self._deadlines.events,
            )
        except (Unavailable, DeadlineExceeded) as error:  # events (or its database) down: send again later
            self._impression_buffer.add(impression)
            log.warning("impression of request %s not logged yet, buffered: %s", impression.request_id, error)
        except Exception as error:  # never fails the search that produced it
            self.impressions_failed += 1
            self._metrics.impressions_failed.add(1)
            log.warning("impression of request %s not logged: %s", impression.request_id, error)

    async def wait_for_impressions(self, request_ids=None, timeout: float = IMPRESSION_WAIT_SECONDS) -> None:
        """Waits (bounded) until the impressions of these requests (default: all) are sent."""
        tasks = [
            task
            for request_id, task in list(self._pending_impressions.items())
            if request_ids is None or request_id in request_ids
        ]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    async def close(self, timeout: float) -> None:
        """At shutdown: waits (bounded) for impressions in flight and for the buffer to drain,
        then stops resending; what still waits is lost with this process and counted as
        dropped (reason "shutdown")."""
        await self.wait_for_impressions(timeout=timeout)
        await self._impression_buffer.wait_until_empty(timeout)
        await self._impression_buffer.close()

    async def track(self, request: gateway_pb2.TrackRequest, remaining: float | None) -> gateway_pb2.TrackResponse:
        count = len(request.interactions)
        if not 1 <= count <= MAX_TRACK_EVENTS:
            raise InvalidArgument("interactions", f"must contain 1-{MAX_TRACK_EVENTS} events, got {count}")
        shown = {i.request_id for i in request.interactions}
        await self.wait_for_impressions(shown)
        await self._impression_buffer.send_waiting(shown)
        budget = Budget.from_remaining(remaining)
        response = await self._downstream.call(
            "events",
            self._downstream.events.LogEvents,
            events_pb2.LogEventsRequest(interactions=request.interactions),
            budget.timeout(self._deadlines.events, "events"),
        )
        return gateway_pb2.TrackResponse(accepted=response.accepted, duplicates=response.duplicates)


@dataclass(frozen=True)
class _Page:
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


def _without_explored(page: "_Page", offset: int, page_size: int, skip: int, window: tuple[int, int]) -> "_Page":
    """A later page of an explored search: the ranked order without the products the first page
    showed (pool ranks in `skip`), cut at the requested page; positions continue from it."""
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
                   next_token=encode_page_token(next_offset, skip) if next_offset < page.total else "")


def _served_features(results) -> list[events_pb2.ProductFeatures]:
    """The ranking features of each result, aligned with the results, from its reasons (the
    features ranking used; it leaves out zeros, which the log reads as 0). When no result has
    reasons, ranking was bypassed and no features were served: nothing is logged."""
    if not any(result.reasons for result in results):
        return []
    return [
        events_pb2.ProductFeatures(values={reason.feature: reason.value for reason in result.reasons})
        for result in results
    ]


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


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 3)
