"""`shelfwise eval offpolicy`: a ranking's CTR and CVR estimated from logged searches, before it
serves anyone, by inverse propensity scoring over the gateway's explored searches.

The log: a share of first pages is drawn from the ranker's top products (the pool) in a sampled
order (services/gateway/exploration.py); their impressions carry, per shown product, the
probability that it was shown at its position (``impressions.propensities``), and the pool
with the ranking features of each of its products (``impressions.exploration_pool``,
relevance log-odds included). Clicks and purchases are joined by request id and position.

The target policy ranks each logged pool as its arm would: relevance log-odds
(``relevance_probability`` logged by the relevance ranker) plus the adjustments of
services/ranking/ranker.py (brand and attribute matches; popularity, personal affinity and the
CTR head's click log-odds when the arm uses them, with the weights of ``AdjustmentWeights``, or
the ``SHELFWISE_RANKING_*_WEIGHT`` settings of the environment).

Estimator (item-position model: a click depends on the product and the position it is shown
at; Li et al. 2018, "Offline Evaluation of Ranking Policies with Click Models"): the weight of
logged position k of search i is w_ik = 1[the target, ranking the pool, puts the logged product
at k] / p_ik, and

- IPS:   clicks per search = (1/n) sum_i sum_k w_ik c_ik;
- SNIPS: per position, V_k = sum_i w_ik c_ik / sum_i w_ik (E[w_ik] = 1 under the logging
         policy), clicks per search = sum_k V_k.

CTR = clicks per search / products per search (the A/B report's clicks / products shown, for
pages of equal length); CVR = purchases per search, with purchases at a position in place of
clicks. Intervals: 95% percentile bootstrap over users (the randomisation unit of the A/B
report). Effective sample size per position: (sum w)^2 / sum w^2.

What it does not see: products the target would show from below the pool (the logging
ranker's top 20 by default), and a shopper who stops reading after a purchase breaks the
item-position assumption a little. The
simulator checks it against the A/B intervals (`shelfwise simulate --compare learning`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Sequence

import numpy as np

from training.stats import cluster_weights, percentile_interval

# The arms of `shelfwise simulate --compare learning` a target policy can be: which learned
# parts each uses (services/gateway/experiments.LEARNED_PARTS).
POLICY_PARTS = {
    "control": frozenset(),
    "ctr-head": frozenset({"ctr_head"}),
    "popularity": frozenset({"popularity"}),
    "personalization": frozenset({"personalization"}),
    "learned-all": frozenset({"ctr_head", "popularity", "personalization"}),
}
BOOTSTRAP_SAMPLES = 1000
# The position-based estimator reads the examination curve from clicks on the pool's top
# products only (see `examination`).
EXAMINATION_RANKS = 10


@dataclass(frozen=True)
class ExploredSearch:
    """One logged page whose products were drawn from a ranked pool in a sampled order."""

    unit: str
    arm: str
    shown: tuple[str, ...]  # product ids by position
    propensities: tuple[float, ...]  # of each shown product at its position
    pool: tuple[str, ...]  # the pool, best first
    pool_features: tuple[dict[str, float], ...]
    pool_shown: tuple[float, ...]  # P(each pool product was shown on the page at all)
    clicks: tuple[int, ...]  # per shown position, 0-based
    purchases: tuple[int, ...]


@dataclass(frozen=True)
class TargetPolicy:
    """How an arm orders a page: relevance plus the adjustments of the parts it uses."""

    name: str
    parts: frozenset[str]
    weights: dict[str, float] = field(default_factory=dict)  # AdjustmentWeights fields
    ctr_head: Path | None = None  # the head's model.onnx, when the policy uses it

    def scores(self, features: Sequence[dict[str, float]], session=None) -> np.ndarray:
        """The arm's score of each product: relevance log-odds plus the ranker's own
        adjustments (services.ranking.ranker.feature_adjustments) for the parts it uses, plus
        the CTR head's click log-odds when it uses the head (`session`: the head, loaded)."""
        from services.ranking.features import FEATURE_NAMES
        from services.ranking.ranker import LEARNED_PARTS, AdjustmentWeights, feature_adjustments

        if any("relevance_probability" not in f for f in features):
            raise ValueError("a logged product has no relevance_probability: the page was not ranked by the "
                             "relevance ranker, which the target policies reorder")
        probability = np.clip(np.array([f["relevance_probability"] for f in features], dtype=np.float64), 1e-9, 1 - 1e-9)
        relevance = np.log(probability) - np.log1p(-probability)
        matrix = np.array([[f.get(name, 0.0) for name in FEATURE_NAMES] for f in features], dtype=np.float32)
        weights = AdjustmentWeights(**self.weights)
        score = relevance + feature_adjustments(matrix, relevance, weights, frozenset(LEARNED_PARTS) - self.parts).sum(axis=1)
        if "ctr_head" in self.parts and session is not None:
            ctr = np.clip(session.run(["ctr"], {"features": matrix})[0].reshape(-1).astype(np.float64), 1e-6, 1 - 1e-6)
            score += weights.ctr * (np.log(ctr) - np.log1p(-ctr))
        return score


def target_policy(spec: str, repository: Path | None, environ=None) -> TargetPolicy:
    """``ARM`` or ``ARM@N`` (N: the ctr_head version the arm serves; default the latest)."""
    from services.common.inference import find_model
    from services.ranking.config import RankingSettings

    name, _, version = spec.partition("@")
    if name not in POLICY_PARTS:
        raise ValueError(f"--policy: {name!r} is not an arm off-policy evaluation can replay; known: "
                         f"{', '.join(POLICY_PARTS)} (bm25 and other arms retrieve other candidates, which a "
                         "logged page cannot show)")
    parts = POLICY_PARTS[name]
    weights = vars(RankingSettings.from_env(environ).adjustments) if environ is not None else {}
    head = None
    if "ctr_head" in parts:
        if repository is None:
            raise ValueError("--model-repository: needed for a policy that uses the CTR head")
        found = find_model(repository, "ctr_head", int(version) if version else None)
        if found is None:
            raise ValueError(f"--policy {spec}: no ctr_head{'/' + version if version else ''} in {repository}")
        head = found.path
    elif version:
        raise ValueError(f"--policy {spec}: @N pins a CTR head; {name} does not use one")
    return TargetPolicy(name, parts, weights, head)


def _replay(policy: TargetPolicy, searches: Sequence[ExploredSearch]) -> dict[str, np.ndarray]:
    """[searches, positions] arrays of the logged pages and the target's replay of their pools:
    w (1/propensity where the target puts the logged product at that position, else 0), target
    (the position the target gives the logged product, -1 below its page), propensity, shown
    probability of the logged product, clicks, purchases, shown (pages may be shorter)."""
    session = None
    if policy.ctr_head is not None:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(policy.ctr_head), providers=["CPUExecutionProvider"])
    depth = max(len(s.shown) for s in searches)
    out = {name: np.zeros((len(searches), depth)) for name in
           ("w", "propensity", "shown_probability", "clicks", "purchases", "shown")}
    out["target"] = np.full((len(searches), depth), -1, dtype=np.int64)
    out["pool_rank"] = np.full((len(searches), depth), -1, dtype=np.int64)
    for i, search in enumerate(searches):
        n = len(search.shown)
        pool_rank = {product: rank for rank, product in enumerate(search.pool)}
        order = np.argsort(-policy.scores(search.pool_features, session), kind="stable")
        target_position = {search.pool[rank]: position for position, rank in enumerate(order[:n])}
        shown_probability = dict(zip(search.pool, search.pool_shown))
        for j, product in enumerate(search.shown):
            out["target"][i, j] = target_position.get(product, -1)
            out["shown_probability"][i, j] = shown_probability.get(product, 0.0)
            out["pool_rank"][i, j] = pool_rank.get(product, -1)
        out["propensity"][i, :n] = search.propensities
        out["w"][i, :n] = np.where(out["target"][i, :n] == np.arange(n), 1.0 / out["propensity"][i, :n], 0.0)
        out["clicks"][i, :n] = search.clicks
        out["purchases"][i, :n] = search.purchases
        out["shown"][i, :n] = 1.0
    return out


def examination(m: dict[str, np.ndarray], multiplicity: np.ndarray) -> np.ndarray:
    """P(a shopper examines position k) relative to position 1, from the explored pages: under
    the position-based model E[click at k / propensity] = examination(k) x the summed
    attractiveness of the products that can be shown there, the same set for every position.
    Only the pool's top EXAMINATION_RANKS products count: a product from deep in the pool shown
    first has a tiny propensity, and one such click would otherwise weigh thousands of others."""
    counted = (m["shown"] > 0) & (m["pool_rank"] >= 0) & (m["pool_rank"] < EXAMINATION_RANKS)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_position = multiplicity @ np.where(counted, m["clicks"] / np.where(counted, m["propensity"], 1.0), 0.0)
    return per_position / per_position[0] if per_position[0] > 0 else np.ones_like(per_position)


def _estimates(m: dict[str, np.ndarray], multiplicity: np.ndarray) -> dict:
    """CTR and CVR over the searches, each counted `multiplicity` times, by three estimators:
    IPS and SNIPS (item-position model) and PBM (position-based model)."""
    searches = multiplicity.sum()
    per_search = (multiplicity @ m["shown"]).sum() / searches
    mass = multiplicity @ m["w"]
    theta = examination(m, multiplicity)
    # PBM: a logged click of a product shown at j with probability P(shown) tells its
    # attractiveness as click / (theta_j P(shown)); the target shows it at its own position k,
    # where it is examined with theta_k.
    moved = m["target"] >= 0
    with np.errstate(invalid="ignore", divide="ignore"):
        theta_shown = theta[np.arange(m["shown"].shape[1])][None, :]
        factor = np.where(moved & (m["shown_probability"] > 0),
                          theta[np.clip(m["target"], 0, None)] / (theta_shown * np.where(m["shown_probability"] > 0, m["shown_probability"], 1.0)),
                          0.0)
    out = {}
    for metric, outcome in (("clicks", m["clicks"]), ("purchases", m["purchases"])):
        weighted = multiplicity @ (m["w"] * outcome)
        with np.errstate(invalid="ignore", divide="ignore"):
            by_position = np.where(mass > 0, weighted / np.where(mass > 0, mass, 1.0), 0.0)
        out[metric] = {"ips": float(weighted.sum() / searches), "snips": float(by_position.sum()),
                       "pbm": float((multiplicity @ (factor * outcome)).sum() / searches)}
    return {"ctr": {k: v / per_search for k, v in out["clicks"].items()}, "cvr": out["purchases"]}


ESTIMATORS = ("ips", "snips", "pbm")


def estimate(policy: TargetPolicy, searches: Sequence[ExploredSearch], samples: int = BOOTSTRAP_SAMPLES,
             seed: int = 0) -> dict:
    """IPS, SNIPS and PBM estimates of the policy's CTR and CVR with user-bootstrap intervals."""
    return estimate_pooled([(policy, searches)], samples, seed)


def estimate_pooled(logs: Sequence[tuple[TargetPolicy, Sequence[ExploredSearch]]], samples: int = BOOTSTRAP_SAMPLES,
                    seed: int = 0) -> dict:
    """One estimate over several logs, each replayed with its own policy (e.g. one simulated
    shop per seed, each with the CTR head trained on its own warm-up)."""
    policy = logs[0][0]
    logged = sum(len(searches) for _, searches in logs)
    replays, kept = [], []
    for target, searches in logs:
        # Pages the relevance ranker did not rank (e.g. a BM25-order arm) hold no relevance
        # log-odds to reorder by: left out, and counted.
        searches = [s for s in searches if s.pool and all("relevance_probability" in f for f in s.pool_features)]
        if searches:
            replays.append(_replay(target, searches))
            kept += searches
    searches = kept
    if not searches:
        raise ValueError(f"no explored searches ranked by the relevance ranker in the window ({logged} explored in all): "
                         "set SHELFWISE_EXPLORATION_SHARE > 0 on the gateway")
    depth = max(r["w"].shape[1] for r in replays)
    m = {name: np.concatenate([np.pad(r[name], ((0, 0), (0, depth - r[name].shape[1])),
                                      constant_values=-1 if name == "target" else 0) for r in replays])
         for name in replays[0]}
    point = _estimates(m, np.ones(len(searches)))
    unit_index: dict[str, int] = {}
    unit_of = np.array([unit_index.setdefault(s.unit, len(unit_index)) for s in searches])
    # Users drawn with replacement; each search counts as often as its user was drawn.
    replicates = [_estimates(m, weights) for weights in cluster_weights(unit_of, samples, seed)]
    result = {"policy": policy.name, "ctr_head": ", ".join(str(t.ctr_head) for t, _ in logs if t.ctr_head),
              "searches": len(searches),
              "left_out_not_relevance_ranked": logged - len(searches), "units": len(unit_index)}
    for metric in ("ctr", "cvr"):
        for estimator in ESTIMATORS:
            low, high = percentile_interval([r[metric][estimator] for r in replicates])
            result[f"{metric}_{estimator}"] = {"value": point[metric][estimator], "low": low, "high": high}
    w = m["w"]
    with np.errstate(invalid="ignore", divide="ignore"):
        ess = np.nan_to_num(w.sum(axis=0) ** 2 / (w**2).sum(axis=0))
    result["effective_sample_size"] = {"per_position": [float(x) for x in ess], "min": float(ess.min())}
    result["matched_share"] = float((w > 0).sum() / m["shown"].sum())
    result["examination"] = [float(x) for x in examination(m, np.ones(len(searches)))]
    return result


# --------------------------------------------------------------------------- the log

_EXPLORED = """
WITH acted AS (
    SELECT x.request_id,
           coalesce(array_agg(x.position) FILTER (WHERE x.type = 'click'), '{}') AS clicked,
           coalesce(array_agg(x.position) FILTER (WHERE x.type = 'purchase'), '{}') AS purchased
    FROM interactions x
    WHERE x.request_id IN (SELECT request_id FROM impressions
                           WHERE cardinality(propensities) > 0 AND occurred_at >= $1 AND occurred_at < $2)
    GROUP BY x.request_id
)
SELECT CASE WHEN i.user_id <> '' THEN 'user:' || i.user_id
            WHEN i.session_id <> '' THEN 'session:' || i.session_id
            ELSE 'request:' || i.request_id END AS unit,
       i.experiment_arm, i.first_position, i.product_ids, i.propensities, i.exploration_pool,
       coalesce(a.clicked, '{}') AS clicked, coalesce(a.purchased, '{}') AS purchased
FROM impressions i LEFT JOIN acted a ON a.request_id = i.request_id
WHERE cardinality(i.propensities) > 0 AND i.surface = 'search' AND i.occurred_at >= $1 AND i.occurred_at < $2
  AND ($3 = '' OR split_part(i.experiment_arm, '/', 1) = $3)
ORDER BY i.request_id
"""


async def read_explored(url: str, since: datetime, until: datetime, experiment: str = "") -> list[ExploredSearch]:
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch(_EXPLORED, since, until, experiment)
    finally:
        await connection.close()
    searches = []
    for row in rows:
        size = len(row["propensities"])
        clicks, purchases = [0] * size, [0] * size
        for positions, counts in ((row["clicked"], clicks), (row["purchased"], purchases)):
            for position in positions:
                index = position - row["first_position"]
                if 0 <= index < size:
                    counts[index] = 1  # a repeated click on one product counts once, as a shown product can
        pool = row["exploration_pool"]
        pool = json.loads(pool) if isinstance(pool, str) else pool
        searches.append(ExploredSearch(
            unit=row["unit"], arm=row["experiment_arm"].partition("/")[2], shown=tuple(row["product_ids"]),
            propensities=tuple(row["propensities"]), pool=tuple(entry[0] for entry in pool),
            pool_features=tuple(entry[1] for entry in pool), pool_shown=tuple(entry[2] for entry in pool),
            clicks=tuple(clicks), purchases=tuple(purchases),
        ))
    return searches


def format_estimate(result: dict) -> str:
    def cell(interval: dict) -> str:
        return f"{interval['value']:.4f} [{interval['low']:.4f}, {interval['high']:.4f}]"

    return (f"{result['policy']}: {result['searches']} explored searches ({result['units']} users)\n"
            f"    CTR  PBM {cell(result['ctr_pbm'])}  IPS {cell(result['ctr_ips'])}  SNIPS {cell(result['ctr_snips'])}\n"
            f"    CVR  PBM {cell(result['cvr_pbm'])}  IPS {cell(result['cvr_ips'])}  SNIPS {cell(result['cvr_snips'])}\n"
            f"    least effective sample size of a position (IPS) {result['effective_sample_size']['min']:.0f}; "
            f"examination by position " + " ".join(f"{x:.2f}" for x in result["examination"]))


# --------------------------------------------------------------------------- the command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", required=True, action="append",
                        help=f"arm to evaluate (repeatable): {', '.join(POLICY_PARTS)}; ARM@N pins ctr_head version N")
    parser.add_argument("--since", required=True, type=datetime.fromisoformat, help="window start (ISO 8601)")
    parser.add_argument("--until", required=True, type=datetime.fromisoformat, help="window end (ISO 8601)")
    parser.add_argument("--experiment", default="", help="only the explored searches of this experiment")
    parser.add_argument("--database-url", help="default: SHELFWISE_DATABASE_URL")
    parser.add_argument("--model-repository", type=Path, help="default: SHELFWISE_MODEL_REPOSITORY")
    parser.add_argument("--samples", type=int, default=BOOTSTRAP_SAMPLES, help="bootstrap resamples")
    parser.add_argument("--out", type=Path, help="write the estimates as JSON")


async def run_command(args) -> int:
    import os

    from services.common.config import database_url, model_repository

    since, until = (t if t.tzinfo else t.astimezone() for t in (args.since, args.until))
    try:
        policies = [target_policy(spec, args.model_repository or model_repository(), os.environ) for spec in args.policy]
        searches = await read_explored(args.database_url or database_url(), since, until, args.experiment)
        results = [estimate(policy, searches, args.samples) for policy in policies]
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    for result in results:
        print(format_estimate(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shelfwise eval offpolicy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return asyncio.run(run_command(parser.parse_args(argv)))
