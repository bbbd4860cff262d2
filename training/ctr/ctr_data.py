"""CTR/CVR training rows from the events tables: one row per product shown, with the ranking
features served for it, its position, and whether it was clicked and bought.

Reads ``impressions`` (one row per page served, with ``features``: a JSON array aligned with
``product_ids``, ``{feature name: value}`` per product, absent = 0) joined with the
``interactions`` attributed to them, in one streamed query (a server-side cursor), never one
query per impression. Labels of the product at ``product_ids[i]`` (position
``first_position + i``):

* ``click``: any click on that (request, position);
* ``purchase``: a purchase of that product attributed to the request. A purchase implies the
  shopper engaged with the item, so a purchased row is also a clicked row (ESMM models
  conversion over the whole impression space as P(click) · P(purchase | click), which needs
  purchase <= click; a purchase straight from the results page, without a logged click, is such
  an engagement).

Only interactions within ``attribution`` (default 1 day) of the impression count, so every
impression gets the same time to collect its labels wherever it falls in a window.
Impressions logged without features (``[]``: before features were logged, or by a client that
does not send them) are skipped and counted.

The features are the values the ranker actually used when the page was served (popularity as
it was then, not as it is now), so rows are point-in-time correct by construction; splitting
by impression time (:meth:`CtrRows.split_at`, :meth:`CtrRows.split_tail`) then keeps every
later-window fact out of training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Mapping

import numpy as np

from services.ranking.features import FEATURE_NAMES

DEFAULT_ATTRIBUTION = timedelta(days=1)
_FEATURE_INDEX = {name: index for index, name in enumerate(FEATURE_NAMES)}

# Interactions are aggregated per request once (a hash join over the window's impressions)
# rather than looked up per impression. Positions of clicks and product ids of purchases are
# all the labels need.
_QUERY = """
WITH shown AS (
    SELECT request_id, occurred_at, first_position, product_ids, features
    FROM impressions
    -- An inequality, not jsonb_array_length(...) > 0: PostgreSQL estimates it from the column's
    -- statistics, where a function call got a guess of a few rows and a nested-loop plan that
    -- took 30 s for 14k impressions (a hash join takes well under one).
    WHERE occurred_at >= $1 AND occurred_at < $2 AND features <> '[]'::jsonb
), acted AS (
    SELECT x.request_id,
           array_agg(DISTINCT x.position) FILTER (WHERE x.type = 'click') AS clicked_positions,
           array_agg(DISTINCT x.product_id) FILTER (WHERE x.type = 'purchase') AS purchased_ids
    FROM interactions x JOIN shown s ON s.request_id = x.request_id
    WHERE x.type IN ('click', 'purchase') AND x.occurred_at < s.occurred_at + $3::interval
      -- Redundant bounds on the interactions' own time, so a table partitioned by occurred_at
      -- scans only the partitions that can hold labels of this window (a day of clock skew).
      AND x.occurred_at >= $1::timestamptz - interval '1 day' AND x.occurred_at < $2::timestamptz + $3::interval
    GROUP BY x.request_id
)
SELECT s.request_id, s.occurred_at, s.first_position, s.product_ids, s.features::text AS features,
       coalesce(a.clicked_positions, '{}') AS clicked_positions,
       coalesce(a.purchased_ids, '{}') AS purchased_ids
FROM shown s LEFT JOIN acted a USING (request_id)
ORDER BY s.occurred_at, s.request_id
"""
_COUNT = """
SELECT count(*) FILTER (WHERE features <> '[]'::jsonb) AS with_features,
       count(*) FILTER (WHERE features = '[]'::jsonb AND product_ids <> '{}') AS without_features
FROM impressions WHERE occurred_at >= $1 AND occurred_at < $2
"""


@dataclass(frozen=True)
class CtrRows:
    """Column arrays, one entry per product shown, ordered by impression time.

    ``impression`` numbers the impressions 0.. in that order (rows of one page share it), which
    is what the time splits and the per-impression bootstrap group by.
    """

    features: np.ndarray  # float32 [N, len(FEATURE_NAMES)]
    positions: np.ndarray  # int64 [N], 1-based
    clicks: np.ndarray  # float32 [N], 0/1
    purchases: np.ndarray  # float32 [N], 0/1 (implies click)
    occurred_at: np.ndarray  # datetime64[us] [N], UTC, of the impression
    impression: np.ndarray  # int64 [N]
    skipped_impressions: int = 0  # logged without features

    def __len__(self) -> int:
        return len(self.clicks)

    @property
    def impressions(self) -> int:
        return int(len(np.unique(self.impression)))

    def take(self, mask: np.ndarray) -> "CtrRows":
        return CtrRows(
            self.features[mask], self.positions[mask], self.clicks[mask], self.purchases[mask],
            self.occurred_at[mask], self.impression[mask], self.skipped_impressions,
        )

    def split_at(self, when: datetime) -> tuple["CtrRows", "CtrRows"]:
        """(impressions before ``when``, impressions at or after it)."""
        cut = np.datetime64(_naive_utc(when), "us")
        earlier = self.occurred_at < cut
        return self.take(earlier), self.take(~earlier)

    def split_tail(self, fraction: float) -> tuple["CtrRows", "CtrRows"]:
        """(earlier impressions, the latest ``fraction`` of impressions): a validation slice
        that comes after its training rows in time, like the evaluation window does."""
        if not 0 < fraction < 1:
            raise ValueError(f"fraction must be in (0, 1), got {fraction}")
        count = self.impressions
        first_held_out = count - max(1, int(round(count * fraction)))
        later = self.impression >= first_held_out
        return self.take(~later), self.take(later)

    def summary(self) -> dict[str, Any]:
        """Counts and the time span, for reports and metadata."""
        span = (
            [str(np.datetime_as_string(self.occurred_at.min(), "s")) + "Z", str(np.datetime_as_string(self.occurred_at.max(), "s")) + "Z"]
            if len(self) else [None, None]
        )
        return {
            "impressions": self.impressions,
            "rows": len(self),
            "clicks": int(self.clicks.sum()),
            "purchases": int(self.purchases.sum()),
            "skipped_impressions_without_features": self.skipped_impressions,
            "first_impression_at": span[0],
            "last_impression_at": span[1],
        }


def _naive_utc(when: datetime) -> datetime:
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc).replace(tzinfo=None)
    return when


def feature_vector(values: Mapping[str, float]) -> np.ndarray:
    """{feature name: value} -> float32 [len(FEATURE_NAMES)] in the head's input order; absent
    features are 0 (ranking omits zero-valued ones) and names the head does not know are ignored
    (a newer ranker may log more features than this head reads)."""
    vector = np.zeros(len(FEATURE_NAMES), dtype=np.float32)
    for name, value in values.items():
        index = _FEATURE_INDEX.get(name)
        if index is not None:
            vector[index] = float(value)
    return vector


class RowBuilder:
    """Turns impression records into rows one record at a time, so a streamed read holds
    compact per-page arrays rather than every database record until the end."""

    def __init__(self, skipped: int = 0):
        self.skipped = skipped
        self._pages: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, datetime]] = []

    def add(self, record: Mapping[str, Any]) -> None:
        """One impression record (as the query returns it: occurred_at, first_position,
        product_ids, features as JSON text or a list, clicked_positions, purchased_ids).
        Records whose features are empty or not aligned with product_ids are skipped and counted."""
        logged = record["features"]
        if isinstance(logged, str):
            logged = json.loads(logged)
        product_ids = list(record["product_ids"])
        if not logged or len(logged) != len(product_ids):
            self.skipped += 1
            return
        clicked = set(record["clicked_positions"] or ())
        purchased = set(record["purchased_ids"] or ())
        positions = record["first_position"] + np.arange(len(product_ids), dtype=np.int64)
        bought = np.array([product_id in purchased for product_id in product_ids], dtype=np.float32)
        clicks = np.maximum(bought, np.array([int(p) in clicked for p in positions], dtype=np.float32))
        features = np.stack([feature_vector(values or {}) for values in logged])
        self._pages.append((features, positions, clicks, bought, _naive_utc(record["occurred_at"])))

    def build(self) -> CtrRows:
        pages = self._pages
        if not pages:
            return CtrRows(
                np.zeros((0, len(FEATURE_NAMES)), dtype=np.float32), np.zeros(0, dtype=np.int64),
                np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.float32), np.zeros(0, dtype="datetime64[us]"),
                np.zeros(0, dtype=np.int64), self.skipped,
            )
        sizes = [len(page[1]) for page in pages]
        return CtrRows(
            features=np.concatenate([page[0] for page in pages]),
            positions=np.concatenate([page[1] for page in pages]),
            clicks=np.concatenate([page[2] for page in pages]),
            purchases=np.concatenate([page[3] for page in pages]),
            occurred_at=np.repeat(np.array([page[4] for page in pages], dtype="datetime64[us]"), sizes),
            impression=np.repeat(np.arange(len(pages), dtype=np.int64), sizes),
            skipped_impressions=self.skipped,
        )


def rows_from_impressions(records: Iterable[Mapping[str, Any]], skipped: int = 0) -> CtrRows:
    """Expand impression records (see :meth:`RowBuilder.add`) into one row per product shown."""
    builder = RowBuilder(skipped)
    for record in records:
        builder.add(record)
    return builder.build()


async def read_rows(
    dsn: str,
    since: datetime | None = None,
    until: datetime | None = None,
    attribution: timedelta = DEFAULT_ATTRIBUTION,
    progress: bool = True,
    description: str = "impressions",
) -> CtrRows:
    """Rows of the impressions with ``since <= occurred_at < until`` (default: all until now),
    streamed through one server-side cursor."""
    import asyncpg
    from tqdm.auto import tqdm

    since = since or datetime(1970, 1, 1, tzinfo=timezone.utc)
    until = until or datetime.now(timezone.utc)
    connection = await asyncpg.connect(dsn)
    try:
        # A cursor needs a transaction; read-only, so it never blocks the services' writes, and
        # one snapshot, so the count (progress bar, skipped impressions) matches the rows read.
        async with connection.transaction(readonly=True, isolation="repeatable_read"):
            counts = await connection.fetchrow(_COUNT, since, until)
            builder = RowBuilder(skipped=counts["without_features"])
            bar = tqdm(total=counts["with_features"], desc=description, unit="imp", disable=not progress, leave=False)
            try:
                async for record in connection.cursor(_QUERY, since, until, attribution, prefetch=2_000):
                    builder.add(record)
                    bar.update(1)
            finally:
                bar.close()
    finally:
        await connection.close()
    return builder.build()


def parse_time(text: str) -> datetime:
    """ISO date or date-time; naive values are UTC."""
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def as_utc_text(when: datetime) -> str:
    return _naive_utc(when).isoformat(timespec="seconds") + "Z"

