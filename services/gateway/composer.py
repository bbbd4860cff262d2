"""Search, Recommend, Track and Suggest composed from the stage services: the coordinator the
servicer calls, wiring one stage caller, one impression log and one metrics holder into the flows.

Search (search.py): query understanding → retrieval → ranking → (in the background) impression
logging (impressions.py). Each stage runs under its own deadline, capped by what is left of the
caller's (request_context.py). A failed query understanding or ranking stage degrades the answer
(raw text / retrieval order) and says so in `degraded_stages`; retrieval is the one stage
without which there is nothing to show: when it is down the request fails with UNAVAILABLE
("retrieval: ...") and when it is too slow with DEADLINE_EXCEEDED, both before the caller's
deadline (the retrieval stage deadline caps the wait). No honest fallback exists for it: the
gateway holds no catalogue, and a cached or popular page would not answer the query. Every
stage goes through a circuit breaker (downstream.py): after repeated failures a dead stage
fails at once ("<stage>: circuit open"), so a degraded answer, or retrieval's UNAVAILABLE,
comes without waiting out the stage deadline.

Personalisation reads the shopper's history from events at request time (in parallel with
query understanding), so a click logged through Track shapes the very next response without a
retrain. Search uses it for the personal_affinity ranking feature; Recommend FOR_USER and
COMPLETE_CART (recommend.py) use it as the sequence the model continues. With no history, or
with events unreachable ("events.history" in `degraded_stages`), recommendations fall back to
what is popular (in the requested category) and search to non-personal ranking.
Impression logging never blocks or fails a search; Track (track.py) waits briefly for the
impression of the request it refers to, so a fast click is not rejected as unknown.

Suggest (suggest.py) is one call to query understanding's autocomplete index under its own short
stage deadline; it has no fallback (UNAVAILABLE naming query_understanding when that is down).

Experiments (`services.gateway.experiments`, from SHELFWISE_EXPERIMENTS) apply to Search: the
request's arm sets the stage policies (query understanding on/off, retrieval mode, ranking
policy, pinned CTR head), or, for an interleaved experiment, both arms run and their rankings
are merged by team draft (interleaving.py). The impression records the arm (and, interleaved,
the arm of every position); the response's model_version ends with
`experiment=<experiment>/<arm>`. Recommend is not under experiment.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shelfwise.gateway.v1 import gateway_pb2

from services.common.popularity import PopularityCache
from services.gateway.config import RecommendRules, StageDeadlines
from services.gateway.experiments import Experiments
from services.gateway.exploration import ExplorationSettings
from services.gateway.impressions import IMPRESSION_WAIT_SECONDS, ImpressionLog
from services.gateway.metrics import GatewayMetrics
from services.gateway.recommend import RecommendFlow
from services.gateway.search import SearchFlow
from services.gateway.stages import Stages
from services.gateway.suggest import SuggestFlow
from services.gateway.track import Tracker


@dataclass(frozen=True)
class FlowPolicies:
    """How the flows decide beyond their stages: Search's experiments and exploration, and the
    business rules every Recommend obeys."""

    experiments: Experiments = field(default_factory=Experiments)
    exploration: ExplorationSettings = ExplorationSettings()
    recommend_rules: RecommendRules = RecommendRules()


class Composer:
    def __init__(
        self, downstream, deadlines: StageDeadlines, candidates: int, policies: FlowPolicies = FlowPolicies(),
        popularity: PopularityCache | None = None,
    ):
        metrics = GatewayMetrics()
        stages = Stages(downstream, deadlines, candidates, popularity)
        self.impressions = ImpressionLog(downstream, deadlines.events, metrics)
        self._search = SearchFlow(stages, policies.experiments, policies.exploration, self.impressions, metrics)
        self._recommend = RecommendFlow(stages, self.impressions, metrics, policies.recommend_rules)
        self._tracker = Tracker(downstream, deadlines.events, self.impressions)
        self._suggest = SuggestFlow(stages, metrics)

    async def search(self, request: gateway_pb2.SearchRequest, remaining: float | None) -> gateway_pb2.SearchResponse:
        return await self._search.search(request, remaining)

    async def recommend(
        self, request: gateway_pb2.RecommendRequest, remaining: float | None
    ) -> gateway_pb2.RecommendResponse:
        return await self._recommend.recommend(request, remaining)

    async def track(self, request: gateway_pb2.TrackRequest, remaining: float | None) -> gateway_pb2.TrackResponse:
        return await self._tracker.track(request, remaining)

    async def suggest(self, request: gateway_pb2.SuggestRequest, remaining: float | None) -> gateway_pb2.SuggestResponse:
        return await self._suggest.suggest(request, remaining)

    async def wait_for_impressions(self, request_ids=None, timeout: float = IMPRESSION_WAIT_SECONDS) -> None:
        """Waits (bounded) until the impressions of these requests (default: all) are sent."""
        await self.impressions.wait(request_ids, timeout)

    async def close(self, timeout: float) -> None:
        """At shutdown: impressions in flight and in the resend buffer get `timeout` to be sent."""
        await self.impressions.close(timeout)
