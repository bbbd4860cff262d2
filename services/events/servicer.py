"""gRPC adapter of the events service."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone

import grpc
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp
from shelfwise.events.v1 import events_pb2, events_pb2_grpc

from services.common.errors import InvalidArgument, ShelfwiseError
from services.common.server import status_for
from services.common.tracing import current_trace_id
from services.events.metrics import EventsMetrics
from services.events.model import (
    MAX_BATCH,
    MAX_ID_CHARS,
    UNSPECIFIED,
    Impression,
    Interaction,
    check_storable,
    validate_impression,
    validate_interaction,
)
from services.events.queries import EventQueries
from services.events.store import EventStore

log = logging.getLogger(__name__)

# Left of the caller's deadline after the last write retry, to answer UNAVAILABLE in time.
DEADLINE_RESERVE_SECONDS = 0.05
SURFACE_NAMES = {events_pb2.SURFACE_SEARCH: "search", events_pb2.SURFACE_RECOMMEND: "recommend"}
MAX_HISTORY = 200
INTERACTION_NAMES = {
    events_pb2.INTERACTION_TYPE_CLICK: "click",
    events_pb2.INTERACTION_TYPE_ADD_TO_CART: "add_to_cart",
    events_pb2.INTERACTION_TYPE_PURCHASE: "purchase",
}
INTERACTION_TYPES_PB = {name: value for value, name in INTERACTION_NAMES.items()}
GROUPINGS = {
    events_pb2.METRICS_GROUPING_REQUEST: "request",
    events_pb2.METRICS_GROUPING_EXPERIMENT_ARM: "experiment_arm",
    events_pb2.METRICS_GROUPING_MODEL_VERSION: "model_version",
}


def _domain_name(names: dict[int, str], value: int) -> str:
    """The domain's name of an enum value; UNSPECIFIED when unset, the number when unknown (the
    model's validation names the field either way)."""
    return names.get(value, UNSPECIFIED if value == 0 else str(value))


def _time(stamp: Timestamp, field: str, default: datetime) -> datetime:
    if stamp.seconds == 0 and stamp.nanos == 0:
        return default
    try:
        return stamp.ToDatetime(tzinfo=timezone.utc)
    except (ValueError, OverflowError):
        raise InvalidArgument(field, "is not a valid timestamp") from None


def impression_from_pb(message: events_pb2.Impression, where: str, now: datetime) -> Impression:
    return validate_impression(
        Impression(
            event_id=message.event_id,
            request_id=message.request_id,
            surface=_domain_name(SURFACE_NAMES, message.surface),
            product_ids=tuple(message.product_ids),
            first_position=message.first_position or 1,
            occurred_at=_time(message.occurred_at, f"{where}.occurred_at", now),
            user_id=message.user_id,
            session_id=message.session_id,
            query=message.query,
            model_version=message.model_version,
            experiment_arm=message.experiment_arm,
            features=tuple(dict(product.values) for product in message.features),
            interleaving_arms=tuple(message.interleaving_arms),
            propensities=tuple(message.propensities),
            exploration_pool=_exploration_pool(message, where),
        ),
        where,
        now,
    )


def _exploration_pool(message: events_pb2.Impression, where: str) -> tuple[tuple[str, dict[str, float], float], ...]:
    ids, features, shown = message.exploration_pool, message.exploration_pool_features, message.exploration_pool_shown
    for name, values in (("exploration_pool_features", features), ("exploration_pool_shown", shown)):
        if values and len(values) != len(ids):
            raise InvalidArgument(f"{where}.{name}",
                                  f"must be empty or have one entry per pool product ({len(ids)}), got {len(values)}")
    return tuple(
        (product_id, dict(features[i].values) if features else {}, float(shown[i]) if shown else 0.0)
        for i, product_id in enumerate(ids)
    )


def interaction_from_pb(message: events_pb2.Interaction, where: str, now: datetime) -> Interaction:
    return validate_interaction(
        Interaction(
            event_id=message.event_id,
            type=_domain_name(INTERACTION_NAMES, message.type),
            request_id=message.request_id,
            product_id=message.product_id,
            position=message.position,
            occurred_at=_time(message.occurred_at, f"{where}.occurred_at", now),
            user_id=message.user_id,
            session_id=message.session_id,
            quantity=message.quantity or 1,
            value=message.value,
        ),
        where,
        now,
    )


def _status_name(error: BaseException) -> str:
    """The gRPC status a caller gets for this failure (as ErrorMappingInterceptor maps it)."""
    if isinstance(error, ShelfwiseError):
        return status_for(error).name
    if isinstance(error, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED.name
    return grpc.StatusCode.INTERNAL.name


def _limit(request, default: int, maximum: int) -> int:
    limit = request.limit if request.HasField("limit") else default
    if not 1 <= limit <= maximum:
        raise InvalidArgument("limit", f"must be between 1 and {maximum}, got {limit}")
    return limit


class EventsServicer(events_pb2_grpc.EventsServiceServicer):
    def __init__(self, store: EventStore, queries: EventQueries, write_retry_seconds: float = 30.0):
        self._store = store
        self._queries = queries
        self._metrics = EventsMetrics()
        self._write_retry_seconds = write_retry_seconds

    def _retry_until(self, context) -> float:
        """Event-loop time until which a failed write may be retried: the store's retry window,
        cut to leave a little of the caller's deadline for the answer."""
        window = self._write_retry_seconds
        remaining = context.time_remaining()
        if remaining is not None:
            window = min(window, remaining - DEADLINE_RESERVE_SECONDS)
        return asyncio.get_running_loop().time() + window

    async def LogEvents(self, request: events_pb2.LogEventsRequest, context) -> events_pb2.LogEventsResponse:
        accepted, duplicates = await self._write(request.impressions, request.interactions, self._retry_until(context))
        return events_pb2.LogEventsResponse(accepted=accepted, duplicates=duplicates)

    async def StreamEvents(self, requests, context):
        """One acknowledgement per batch, after its commit. The shared interceptor maps errors of
        unary calls only, so this handler maps its own (same table, never a stack trace)."""
        sequence = None
        try:
            async for request in requests:
                sequence = request.sequence
                accepted, duplicates = await self._write(
                    request.impressions, request.interactions, self._retry_until(context)
                )
                yield events_pb2.StreamEventsResponse(sequence=sequence, accepted=accepted, duplicates=duplicates)
        except ShelfwiseError as error:
            await context.abort(status_for(error), f"{error.message} (batch sequence {sequence})")
        except DecodeError as error:
            # Streams deserialize inside the handler: a message that is not a StreamEventsRequest
            # (e.g. invalid UTF-8 in a string field) is the caller's error, not ours.
            after = f"after batch sequence {sequence}" if sequence is not None else "first message"
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"request: must be a valid StreamEventsRequest ({after}): {str(error)[-80:]}",
            )
        except grpc.aio.AbortError:
            raise
        except Exception:
            trace_id = current_trace_id()
            log.exception("unhandled error in StreamEvents (trace id %s)", trace_id)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error (trace id {trace_id or 'none'})")

    async def _write(self, impressions_pb, interactions_pb, retry_until: float) -> tuple[int, int]:
        try:
            total = len(impressions_pb) + len(interactions_pb)
            if total == 0:
                raise InvalidArgument("impressions", "a request must carry at least one impression or interaction")
            if total > MAX_BATCH:
                raise InvalidArgument("interactions", f"at most {MAX_BATCH} events per call, got {total}")
            now = datetime.now(timezone.utc)
            impressions = [impression_from_pb(m, f"impressions[{i}]", now) for i, m in enumerate(impressions_pb)]
            interactions = [interaction_from_pb(m, f"interactions[{i}]", now) for i, m in enumerate(interactions_pb)]
            return await self._store.write(impressions, interactions, retry_until)
        except (Exception, asyncio.CancelledError) as error:  # counted, then mapped to a status
            status = _status_name(error)
            self._metrics.failed("impression", len(impressions_pb), status)
            self._metrics.failed("interaction", len(interactions_pb), status)
            raise

    async def GetMetrics(self, request: events_pb2.GetMetricsRequest, context) -> events_pb2.GetMetricsResponse:
        group_by = GROUPINGS.get(request.group_by)
        if group_by is None:
            raise InvalidArgument("group_by", "must be REQUEST, EXPERIMENT_ARM or MODEL_VERSION")
        if len(request.request_id) > MAX_ID_CHARS:
            raise InvalidArgument("request_id", f"must be at most {MAX_ID_CHARS} characters")
        check_storable(request.request_id, "request_id")
        since = _time(request.since, "since", None) if request.HasField("since") else None
        until = _time(request.until, "until", None) if request.HasField("until") else None
        if since is not None and until is not None and since > until:
            raise InvalidArgument("since", f"must not be after until ({since.isoformat()} > {until.isoformat()})")
        rows = await self._queries.metrics(group_by, request.request_id, since, until, _limit(request, 100, 1000))
        return events_pb2.GetMetricsResponse(
            rows=[
                events_pb2.MetricsRow(
                    key=row.key,
                    requests=row.requests,
                    impressions=row.impressions,
                    clicks=row.clicks,
                    add_to_carts=row.add_to_carts,
                    purchases=row.purchases,
                    revenue=row.revenue,
                    ctr=row.ctr,
                    conversion_rate=row.conversion_rate,
                )
                for row in rows
            ]
        )

    async def ListPopularProducts(self, request, context) -> events_pb2.ListPopularProductsResponse:
        window = request.window_days if request.HasField("window_days") else 30
        if not 1 <= window <= 365:
            raise InvalidArgument("window_days", f"must be between 1 and 365, got {window}")
        if request.HasField("since") != request.HasField("until"):
            raise InvalidArgument("since", "give both since and until (a fixed window), or neither (the last window_days)")
        frozen = None
        if request.HasField("since"):
            frozen = (request.since.ToDatetime(tzinfo=timezone.utc), request.until.ToDatetime(tzinfo=timezone.utc))
            if frozen[0] >= frozen[1]:
                raise InvalidArgument("until", f"must be after since ({frozen[0].isoformat()}), got {frozen[1].isoformat()}")
        products = await self._queries.popular(window, _limit(request, 1000, 10_000), frozen)
        return events_pb2.ListPopularProductsResponse(
            products=[
                events_pb2.PopularProduct(
                    product_id=p.product_id,
                    clicks=p.clicks,
                    add_to_carts=p.add_to_carts,
                    purchases=p.purchases,
                    score=p.score,
                )
                for p in products
            ]
        )

    async def ListUserHistory(self, request, context) -> events_pb2.ListUserHistoryResponse:
        if not request.user_id and not request.session_id:
            raise InvalidArgument("user_id", "or session_id is required (1-128 characters)")
        for name in ("user_id", "session_id"):
            if len(getattr(request, name)) > MAX_ID_CHARS:
                raise InvalidArgument(name, f"must be at most {MAX_ID_CHARS} characters")
            check_storable(getattr(request, name), name)
        entries = await self._queries.history(request.user_id, request.session_id, _limit(request, 50, MAX_HISTORY))
        response = events_pb2.ListUserHistoryResponse()
        for entry in entries:
            message = response.entries.add(product_id=entry.product_id, type=INTERACTION_TYPES_PB[entry.type])
            message.occurred_at.FromDatetime(entry.occurred_at)
        return response
