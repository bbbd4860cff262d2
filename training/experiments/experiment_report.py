"""`shelfwise report experiment NAME`: per-arm CTR, add-to-cart rate, conversion rate and
revenue per search of an online experiment, with 95% intervals, the lift of every arm over the
control, and (interleaved experiments) each arm's share of the impressions it won.

Data: the events tables. A search belongs to experiment NAME when its impression's
``experiment_arm`` is ``"NAME/<arm>"`` (what the gateway writes); interactions are joined by
request id. Only search impressions count.

Definitions, per arm (a "search" is one logged search impression, i.e. one result page):
- CTR = clicks / products shown; search CTR = share of searches with at least one click (CTR
  alone favours an arm that shows fewer products, e.g. a lexical arm with short result lists);
- add-to-cart rate = add-to-carts / searches;
- CVR (conversion rate) = purchases / searches (the events service's definition);
- revenue per search = purchase value / searches.

Intervals: percentile bootstrap, 95%, resampling *units* (users; the session or the request
when a search had no user), not searches. Arms are assigned per user, so a user's searches
share an arm and are correlated (the same taste, the same basket); resampling searches as if
independent would understate the variance and give intervals that are too narrow (Deng et
al., 2011, "delta method / clustered bootstrap"). Each replicate draws the units of every arm
with replacement and recomputes each metric as a ratio of sums, so a heavy user weighs as
much as their searches. The lift of an arm over the control is ``arm / control - 1`` per
replicate (arms resampled independently, as they are disjoint groups of users).

Interleaving: for each interleaved impression, clicks are credited to the arm that contributed
the clicked position (``impressions.interleaving_arms``); the arm with more clicks wins the
impression, equal counts are a tie. Reported: wins, ties, each arm's share of the decided
impressions with a Wilson 95% interval and a two-sided sign (binomial) test against 50%.

Limitation: a search that showed no results has no impression (events stores an impression
only with products), so it is missing from these tables; an arm that finds nothing more often
then looks better per search than it is. Callers that know such searches (the simulator)
add them as records with nothing shown.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np

from services.gateway.experiments import INTERLEAVED, credit_clicks
from training.stats import percentile_interval, resampled_sums

METRICS = ("ctr", "search_ctr", "add_to_cart_rate", "cvr", "revenue_per_search")
METRIC_LABELS = {
    "ctr": "CTR (clicks / products shown)",
    "search_ctr": "searches with a click",
    "add_to_cart_rate": "add-to-cart rate (per search)",
    "cvr": "CVR (purchases per search)",
    "revenue_per_search": "revenue per search",
}
# Columns of the per-unit sums: numerator/denominator pairs of the metrics.
COLUMNS = ("searches", "shown", "clicks", "clicked_searches", "add_to_carts", "purchases", "revenue")
RATIOS = {
    "ctr": ("clicks", "shown"),
    "search_ctr": ("clicked_searches", "searches"),
    "add_to_cart_rate": ("add_to_carts", "searches"),
    "cvr": ("purchases", "searches"),
    "revenue_per_search": ("revenue", "searches"),
}
BOOTSTRAP_SAMPLES = 2_000
BOOTSTRAP_SEED = 7


@dataclass(frozen=True)
class SearchRecord:
    """One search impression of the experiment with what followed it."""

    request_id: str
    unit: str
    arm: str
    shown: int
    clicks: int = 0
    add_to_carts: int = 0
    purchases: int = 0
    revenue: float = 0.0
    first_position: int = 1
    interleaving_arms: tuple[str, ...] = ()
    clicked_positions: tuple[int, ...] = ()
    query: str = ""
    # The gateway sampled the page's order (exploration): not the arm's own ranking.
    explored: bool = False


_SEARCHES = """
WITH acted AS (
    SELECT x.request_id,
           count(*) FILTER (WHERE x.type = 'click') AS clicks,
           count(*) FILTER (WHERE x.type = 'add_to_cart') AS add_to_carts,
           count(*) FILTER (WHERE x.type = 'purchase') AS purchases,
           coalesce(sum(x.value) FILTER (WHERE x.type = 'purchase'), 0) AS revenue,
           coalesce(array_agg(x.position) FILTER (WHERE x.type = 'click'), '{}') AS clicked_positions
    FROM interactions x
    WHERE x.request_id IN (SELECT request_id FROM impressions
                           WHERE split_part(experiment_arm, '/', 1) = $1 AND occurred_at >= $2 AND occurred_at < $3)
    GROUP BY x.request_id
)
SELECT i.request_id,
       CASE WHEN i.user_id <> '' THEN 'user:' || i.user_id
            WHEN i.session_id <> '' THEN 'session:' || i.session_id
            ELSE 'request:' || i.request_id END AS unit,
       substr(i.experiment_arm, length($1) + 2) AS arm,
       cardinality(i.product_ids) AS shown,
       i.first_position,
       i.interleaving_arms,
       coalesce(a.clicks, 0) AS clicks,
       coalesce(a.add_to_carts, 0) AS add_to_carts,
       coalesce(a.purchases, 0) AS purchases,
       coalesce(a.revenue, 0) AS revenue,
       coalesce(a.clicked_positions, '{}') AS clicked_positions,
       i.query,
       cardinality(i.propensities) > 0 AS explored
FROM impressions i LEFT JOIN acted a ON a.request_id = i.request_id
WHERE split_part(i.experiment_arm, '/', 1) = $1 AND i.surface = 'search'
  AND i.occurred_at >= $2 AND i.occurred_at < $3
ORDER BY i.request_id
"""


async def read_searches(
    database_url: str, experiment: str, since: datetime | None = None, until: datetime | None = None
) -> list[SearchRecord]:
    import asyncpg

    since = since or datetime.min.replace(tzinfo=timezone.utc)
    until = until or datetime.max.replace(tzinfo=timezone.utc)
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(_SEARCHES, experiment, since, until)
    finally:
        await connection.close()
    return [
        SearchRecord(
            request_id=row["request_id"], unit=row["unit"], arm=row["arm"], shown=row["shown"],
            clicks=row["clicks"], add_to_carts=row["add_to_carts"], purchases=row["purchases"],
            revenue=float(row["revenue"]), first_position=row["first_position"],
            interleaving_arms=tuple(row["interleaving_arms"] or ()),
            clicked_positions=tuple(row["clicked_positions"] or ()),
            query=row["query"], explored=row["explored"],
        )
        for row in rows
    ]


# --------------------------------------------------------------------------- statistics


def unit_sums(records: Sequence[SearchRecord]) -> np.ndarray:
    """float64 [units, len(COLUMNS)]: each unit's sums (searches, shown, clicks, ...)."""
    by_unit: dict[str, list[float]] = {}
    for r in records:
        sums = by_unit.setdefault(r.unit, [0.0] * len(COLUMNS))
        values = (1, r.shown, r.clicks, 1 if r.clicks else 0, r.add_to_carts, r.purchases, r.revenue)
        for column, value in enumerate(values):
            sums[column] += value
    return np.array(list(by_unit.values()), dtype=np.float64).reshape(-1, len(COLUMNS))


def ratios(sums: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric from column sums (the last axis); 0/0 is nan."""
    index = {name: i for i, name in enumerate(COLUMNS)}
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for metric, (numerator, denominator) in RATIOS.items():
            out[metric] = sums[..., index[numerator]] / sums[..., index[denominator]]
    return out


def _interval(point: float, replicates: np.ndarray) -> dict[str, float]:
    if not math.isfinite(point):
        return {"value": point, "low": float("nan"), "high": float("nan")}
    low, high = percentile_interval(replicates, finite_only=True)
    if math.isnan(low):
        return {"value": point, "low": low, "high": high}
    return {"value": float(point), "low": low, "high": high}


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    if trials == 0:
        return float("nan"), float("nan")
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return centre - half, centre + half


def analyse(
    records: Sequence[SearchRecord],
    experiment: str,
    control: str | None = None,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict:
    """The report as a dict (JSON-ready): per-arm metrics and lifts, and interleaving wins.
    Explored searches (their order sampled for off-policy evaluation) are left out: they show
    the exploration's order, not the arm's."""
    explored = sum(1 for r in records if r.explored)
    records = [r for r in records if not r.explored]
    split = [r for r in records if r.arm != INTERLEAVED]
    arms = sorted({r.arm for r in split})
    if control is None:
        control = "control" if "control" in arms else (arms[0] if arms else None)
    elif arms and control not in arms:
        raise ValueError(f"--control: experiment {experiment!r} has no searches in arm {control!r} (arms: {arms})")
    rng = np.random.default_rng(seed)
    per_arm, replicates = {}, {}
    for arm in arms:
        units = unit_sums([r for r in split if r.arm == arm])
        totals = units.sum(axis=0)
        point = ratios(totals)
        replicates[arm] = ratios(resampled_sums(units, samples, rng))
        per_arm[arm] = {
            "arm": arm,
            "units": int(len(units)),
            **{name: float(totals[i]) if name == "revenue" else int(totals[i]) for i, name in enumerate(COLUMNS)},
            "metrics": {m: _interval(float(point[m]), replicates[arm][m]) for m in METRICS},
        }
    for arm in arms:
        if control is None or arm == control:
            continue
        lifts = {}
        for m in METRICS:
            base = per_arm[control]["metrics"][m]["value"]
            value = per_arm[arm]["metrics"][m]["value"]
            with np.errstate(invalid="ignore", divide="ignore"):
                relative = replicates[arm][m] / replicates[control][m] - 1.0
                absolute = replicates[arm][m] - replicates[control][m]
            lifts[m] = {
                "relative": _interval(value / base - 1.0 if base else float("nan"), relative),
                "absolute": _interval(value - base, absolute),
            }
        per_arm[arm]["lift_vs_control"] = lifts
    report = {
        "experiment": experiment,
        "control": control,
        "searches": len(records),
        "explored_searches_left_out": explored,
        "arms": [per_arm[arm] for arm in arms],
        "interval": f"95% percentile bootstrap over units (users), {samples} resamples, seed {seed}",
    }
    interleaved = [r for r in records if r.arm == INTERLEAVED and r.interleaving_arms]
    if interleaved:
        report["interleaving"] = interleaving_summary(interleaved)
    return report


def interleaving_summary(records: Sequence[SearchRecord]) -> dict:
    from scipy.stats import binomtest

    names = sorted({arm for r in records for arm in r.interleaving_arms})
    wins = {arm: 0 for arm in names}
    ties = 0
    clicks = {arm: 0 for arm in names}
    for r in records:
        credit = credit_clicks(r.interleaving_arms, r.first_position, r.clicked_positions, names)
        for arm, count in credit.clicks.items():
            clicks[arm] = clicks.get(arm, 0) + count
        if credit.winner is None:
            ties += 1
        else:
            wins[credit.winner] += 1
    decided = sum(wins.values())
    arms = []
    for arm in names:
        low, high = wilson_interval(wins[arm], decided)
        p_value = binomtest(wins[arm], decided, 0.5).pvalue if decided and len(names) == 2 else float("nan")
        arms.append({
            "arm": arm, "wins": wins[arm], "clicks": clicks[arm],
            "win_share": wins[arm] / decided if decided else float("nan"),
            "low": low, "high": high, "sign_test_p": float(p_value),
        })
    return {"impressions": len(records), "ties": ties, "decided": decided, "arms": arms,
            "interval": "Wilson 95% over decided impressions; two-sided sign test against 50%"}


# --------------------------------------------------------------------------- output


def _fmt(interval: dict, percent: bool = False, digits: int = 4) -> str:
    if not math.isfinite(interval["value"]):
        return "n/a"
    if percent:
        return f"{100 * interval['value']:+.1f}% [{100 * interval['low']:+.1f}%, {100 * interval['high']:+.1f}%]"
    return f"{interval['value']:.{digits}f} [{interval['low']:.{digits}f}, {interval['high']:.{digits}f}]"


def format_report(report: dict) -> str:
    lines = [f"Experiment {report['experiment']!r}: {report['searches']} searches; control arm: {report['control']}",
             f"  intervals: {report['interval']}"]
    for arm in report["arms"]:
        lines.append(f"\n  arm {arm['arm']}: {arm['searches']} searches by {arm['units']} units, "
                     f"{arm['shown']} products shown, {arm['clicks']} clicks, {arm['add_to_carts']} add-to-carts, "
                     f"{arm['purchases']} purchases, revenue {arm['revenue']:.2f}")
        for m in METRICS:
            digits = 2 if m == "revenue_per_search" else 4
            line = f"    {METRIC_LABELS[m]:<32} {_fmt(arm['metrics'][m], digits=digits)}"
            lift = arm.get("lift_vs_control", {}).get(m)
            if lift:
                line += f"   lift vs {report['control']}: {_fmt(lift['relative'], percent=True)}"
                excludes = lift["relative"]["low"] > 0 or lift["relative"]["high"] < 0
                line += " (excludes 0)" if excludes else " (includes 0)"
            lines.append(line)
    interleaving = report.get("interleaving")
    if interleaving:
        lines.append(f"\n  interleaving: {interleaving['impressions']} impressions, {interleaving['decided']} decided, "
                     f"{interleaving['ties']} ties ({interleaving['interval']})")
        for arm in interleaving["arms"]:
            lines.append(f"    {arm['arm']:<16} wins {arm['wins']:>6}  share {100 * arm['win_share']:.1f}% "
                         f"[{100 * arm['low']:.1f}%, {100 * arm['high']:.1f}%]  sign test p={arm['sign_test_p']:.3g}")
    return "\n".join(lines)


def plot(report: dict, path: Path, title: str | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = report["arms"]
    if not arms and report.get("interleaving"):
        _plot_interleaving(report, path, title, plt)
        return
    figure, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 3.8))
    for axis, metric in zip(axes, METRICS):
        values = [a["metrics"][metric]["value"] for a in arms]
        lows = [a["metrics"][metric]["value"] - a["metrics"][metric]["low"] for a in arms]
        highs = [a["metrics"][metric]["high"] - a["metrics"][metric]["value"] for a in arms]
        axis.bar(range(len(arms)), values, yerr=[lows, highs], capsize=6,
                 color=["#9aa5b1" if a["arm"] == report["control"] else "#2b7bb9" for a in arms])
        axis.set_xticks(range(len(arms)), [a["arm"] for a in arms])
        axis.set_title(METRIC_LABELS[metric], fontsize=9)
    figure.suptitle(title or f"experiment {report['experiment']} (95% bootstrap intervals over users)", fontsize=10)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _plot_interleaving(report: dict, path: Path, title: str | None, plt) -> None:
    """Interleaved experiments: each arm's share of the decided impressions, Wilson intervals."""
    arms = report["interleaving"]["arms"]
    figure, axis = plt.subplots(figsize=(5, 3.8))
    shares = [a["win_share"] for a in arms]
    axis.bar(range(len(arms)), shares, yerr=[[s - a["low"] for s, a in zip(shares, arms)],
                                               [a["high"] - s for s, a in zip(shares, arms)]], capsize=6, color="#2b7bb9")
    axis.axhline(0.5, color="#9aa5b1", linestyle="--", linewidth=1)
    axis.set_xticks(range(len(arms)), [a["arm"] for a in arms])
    axis.set_ylim(0, 1)
    axis.set_ylabel("share of decided impressions won")
    figure.suptitle(title or f"interleaved experiment {report['experiment']} (Wilson 95%)", fontsize=10)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _timestamp(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="experiment name (impressions.experiment_arm = NAME/<arm>)")
    parser.add_argument("--database-url", help="PostgreSQL of the events (default: SHELFWISE_DATABASE_URL)")
    parser.add_argument("--since", type=_timestamp, help="ISO time (UTC unless it says): first impression counted")
    parser.add_argument("--until", type=_timestamp, help="ISO time: impressions before it")
    parser.add_argument("--control", help="control arm (default: 'control', else the first arm by name)")
    parser.add_argument("--samples", type=int, default=BOOTSTRAP_SAMPLES, help="bootstrap resamples")
    parser.add_argument("--plot", type=Path, help="write a PNG of the metrics with their intervals")
    parser.add_argument("--out", type=Path, help="write the report as JSON")


async def run_command(args) -> int:
    from services.common.config import database_url

    try:
        url = args.database_url or database_url()
    except ValueError as error:
        print(f"--database-url: {error}", file=sys.stderr)
        return 2
    records = await read_searches(url, args.name, args.since, args.until)
    if not records:
        print(f"no search impressions of experiment {args.name!r} in the window", file=sys.stderr)
        return 1
    try:
        report = analyse(records, args.name, args.control, args.samples)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    print(format_report(report))
    write_outputs(report, args.out, args.plot)
    return 0


def write_outputs(report: dict, out: Path | None, plot_path: Path | None, title: str | None = None) -> None:
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, default=float) + "\n", encoding="utf-8")
        print(f"report: {out}")
    if plot_path:
        plot(report, plot_path, title)
        print(f"plot: {plot_path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shelfwise report experiment", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    from services.local.running import run_until_stopped

    return run_until_stopped(run_command(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
