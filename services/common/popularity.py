"""Product popularity (engagement from events: clicks + 3 x add-to-carts + 10 x purchases over
a window) kept in memory and refreshed in the background. Ranking scores with it; the gateway's
popular and cold-start pages are ordered by it. Events is asked once per refresh, never once
per request, and a failed refresh keeps the last values. SHELFWISE_POPULARITY_SINCE and
SHELFWISE_POPULARITY_UNTIL freeze it on a fixed window (experiments that must not learn from
their own traffic), for every service that reads it."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Awaitable, Callable, Mapping

from shelfwise.events.v1 import events_pb2

from services.common.background import Periodic
from services.common.config import env_float, env_str

log = logging.getLogger(__name__)

# Most products ListPopularProducts returns: enough that a category's engaged-with products are
# found even when other categories' are more popular.
POPULAR_LIMIT = 10_000


@dataclass(frozen=True)
class PopularitySettings:
    refresh_seconds: float = 30.0
    window_days: int = 30
    # A fixed window [since, until) instead of the last window_days.
    frozen: tuple[datetime, datetime] | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "PopularitySettings":
        return cls(
            refresh_seconds=env_float("SHELFWISE_POPULARITY_REFRESH_SECONDS", 30.0, environ, minimum=0.1),
            frozen=_frozen_window(environ),
        )


class PopularityCache:
    """Engagement per product from events, refreshed in the background so that ranking never
    waits on (or fails with) the events service; a failed refresh keeps the last values."""

    def __init__(self, fetch: Callable[[], Awaitable[Mapping[str, float]]], refresh_seconds: float):
        self._fetch = fetch
        self.values = {}
        self.refreshed_at: float | None = None
        self._refresher = Periodic("popularity refresh", self.refresh, refresh_seconds)

    @property
    def values(self) -> Mapping[str, float]:
        return self._values

    @values.setter
    def values(self, values: Mapping[str, float]) -> None:
        # The largest engagement, found once per refresh rather than once per request.
        self._values, self.best = values, max(values.values(), default=0.0)

    async def refresh(self) -> None:
        try:
            self.values = dict(await self._fetch())
            self.refreshed_at = time.monotonic()
        except Exception as error:  # events down: keep serving with the last known values
            log.warning("popularity refresh failed, keeping %d cached values: %s", len(self.values), error)

    def start(self) -> None:
        self._refresher.start()

    async def stop(self) -> None:
        await self._refresher.stop()


def events_popularity(events, settings: PopularitySettings) -> PopularityCache:
    """A cache filled from the events service (an EventsService stub); start() it."""
    request = events_pb2.ListPopularProductsRequest(window_days=settings.window_days, limit=POPULAR_LIMIT)
    if settings.frozen is not None:
        request.since.FromDatetime(settings.frozen[0])
        request.until.FromDatetime(settings.frozen[1])
        log.info("popularity frozen on the events of [%s, %s)", *(t.isoformat() for t in settings.frozen))

    async def fetch() -> dict[str, float]:
        response = await events.ListPopularProducts(request, timeout=5.0)
        return {p.product_id: p.score for p in response.products}

    return PopularityCache(fetch, settings.refresh_seconds)


def _frozen_window(environ: Mapping[str, str] | None) -> tuple[datetime, datetime] | None:
    since = env_str("SHELFWISE_POPULARITY_SINCE", "", environ).strip()
    until = env_str("SHELFWISE_POPULARITY_UNTIL", "", environ).strip()
    if not since and not until:
        return None
    if not since or not until:
        raise ValueError("SHELFWISE_POPULARITY_SINCE and SHELFWISE_POPULARITY_UNTIL: set both (a frozen window) or neither")
    window = []
    for name, text in (("SHELFWISE_POPULARITY_SINCE", since), ("SHELFWISE_POPULARITY_UNTIL", until)):
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{name}: must be an ISO 8601 time such as 2026-12-01T10:00:00+00:00, got {text!r}") from None
        window.append(moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc))
    if window[0] >= window[1]:
        raise ValueError(f"SHELFWISE_POPULARITY_UNTIL ({until}) must be after SHELFWISE_POPULARITY_SINCE ({since})")
    return window[0], window[1]
