"""`shelfwise eval suggest`: query understanding's autocomplete index against a plain prefix
baseline on a real query log (Best Buy, suggest_data.py), MRR@5 of the logged query given its
first 1, 2 and 3 characters and given a typo'd 3-5 character prefix.

The index is the service's own (`services.query_understanding.suggestions.SuggestionIndex`)
built from the log the way the service builds it from its tables. Its ranking settings
(catalogue weight, inner-word factor, shortest corrected prefix) and the baseline's tie-break
are each chosen on the dev half by one objective: the mean over the four conditions of the
popularity-weighted and the unweighted MRR@5. The test half is then scored once with those
choices, and each difference is reported with a paired 95% bootstrap interval over queries
(training/stats.py), popularity-weighted and unweighted.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from services.common.config import shared_data_dir
from services.query_understanding.suggestions import Ranking, SuggestionIndex
from training.stats import paired_difference_interval, percentile_interval, resampled_indices
from training.suggest.suggest_data import (
    CLEAN_LENGTHS,
    CUTOFF,
    TYPO_LENGTHS,
    LoggedQuery,
    PrefixBaseline,
    index_candidates,
    read_log,
    reciprocal_rank,
    typo_prefix,
)

GRID = {
    # 0: after every logged query (services.query_understanding.suggestions.Ranking).
    "catalogue_weight": (0.0, 0.25, 0.5, 1.0),
    "inner_word_factor": (0.0, 0.25, 0.5, 1.0),
    "min_typo_chars": (3, 4),
}
TIE_BREAKS = ("text", "length")
TYPO = "typo 3-5"
CONDITIONS = tuple(f"prefix {n}" for n in CLEAN_LENGTHS) + (TYPO,)

Suggester = Callable[[str, int], list[str]]


def ours(index: SuggestionIndex) -> Suggester:
    return lambda prefix, limit: [s.text for s in index.suggest(prefix, limit)]


def scores(suggest: Suggester, queries: Sequence[LoggedQuery], condition: str, seed: int):
    """(reciprocal ranks, popularity weights, queries scored) of `condition` over `queries`. A
    typo'd query scores the mean over its eligible prefix lengths (one unit per query)."""
    ranks, weights, kept = [], [], []
    for query in queries:
        if condition == TYPO:
            typed = [p for p in (typo_prefix(query.text, n, seed) for n in TYPO_LENGTHS) if p is not None]
        else:
            n = int(condition.split()[1])
            typed = [query.text[:n]] if len(query.text) >= n else []
        if not typed:
            continue
        ranks.append(np.mean([reciprocal_rank(suggest(p, CUTOFF), query.text) for p in typed]))
        weights.append(query.popularity)
        kept.append(query.text)
    return np.array(ranks), np.array(weights, dtype=np.float64), kept


def weighted_mean(values: np.ndarray, weights: np.ndarray) -> float:
    return float((values * weights).sum() / weights.sum()) if weights.sum() > 0 else float("nan")


def objective(suggest: Suggester, queries: Sequence[LoggedQuery], seed: int) -> float:
    total = 0.0
    for condition in CONDITIONS:
        ranks, weights, _ = scores(suggest, queries, condition, seed)
        total += (weighted_mean(ranks, weights) + float(ranks.mean())) / 2
    return total / len(CONDITIONS)


def choose_on_dev(log: list[LoggedQuery], dev: list[LoggedQuery], seed: int) -> tuple[Ranking, str, list[dict]]:
    """The ranking settings and baseline tie-break with the best dev objective, and every trial."""
    candidates = index_candidates(log)
    trials = []
    for values in itertools.product(*GRID.values()):
        ranking = Ranking(**dict(zip(GRID, values)))
        trials.append({"system": "ours", **asdict(ranking),
                       "objective": objective(ours(SuggestionIndex(candidates, ranking)), dev, seed)})
    for tie_break in TIE_BREAKS:
        trials.append({"system": "baseline", "tie_break": tie_break,
                       "objective": objective(PrefixBaseline(log, tie_break).suggest, dev, seed)})
    best = max((t for t in trials if t["system"] == "ours"), key=lambda t: t["objective"])
    best_baseline = max((t for t in trials if t["system"] == "baseline"), key=lambda t: t["objective"])
    return Ranking(**{k: best[k] for k in GRID}), best_baseline["tie_break"], trials


def weighted_difference_interval(values, reference, weights, samples: int, seed: int) -> tuple[float, float, float]:
    """(difference, low, high) of the popularity-weighted means, paired over resampled queries."""
    diff = np.asarray(values) - np.asarray(reference)
    replicates = [
        weighted_mean(diff[drawn], weights[drawn]) for drawn in resampled_indices(len(diff), samples, seed)
    ]
    low, high = percentile_interval(replicates, finite_only=True)
    return weighted_mean(diff, weights), low, high


def evaluate(systems: dict[str, Suggester], queries: list[LoggedQuery], args) -> list[dict]:
    rows = []
    for condition in CONDITIONS:
        ranks = {name: scores(suggest, queries, condition, args.seed) for name, suggest in systems.items()}
        (a, weights, kept), (b, _, _) = ranks["ours"], ranks["baseline"]
        rows.append({
            "condition": condition, "queries": len(kept), "weighted_queries": int((weights > 0).sum()),
            "ours_weighted": weighted_mean(a, weights), "baseline_weighted": weighted_mean(b, weights),
            "diff_weighted": weighted_difference_interval(a, b, weights, args.bootstrap, args.seed),
            "ours": float(a.mean()), "baseline": float(b.mean()),
            "diff": paired_difference_interval(a, b, args.bootstrap, args.seed),
        })
    return rows


def print_report(rows: list[dict], header: list[str]) -> None:
    print("\n".join(header))
    print("\n| typed | queries (weighted) | ours, popularity-weighted | baseline | difference [95% CI] "
          "| ours, unweighted | baseline | difference [95% CI] |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        dw, du = r["diff_weighted"], r["diff"]
        print(f"| {r['condition']} | {r['queries']} ({r['weighted_queries']}) | {r['ours_weighted']:.3f} "
              f"| {r['baseline_weighted']:.3f} | {dw[0]:+.3f} [{dw[1]:+.3f}, {dw[2]:+.3f}] | {r['ours']:.3f} "
              f"| {r['baseline']:.3f} | {du[0]:+.3f} [{du[1]:+.3f}, {du[2]:+.3f}] |")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shelfwise eval suggest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=shared_data_dir(),
                        help="folder holding algolia_bestbuy/ (default: $SHELFWISE_DATA_DIR or ../shared/data)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the typos and the bootstrap")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap samples for the intervals")
    parser.add_argument("--out", type=Path, help="also write the report as JSON")
    args = parser.parse_args(argv)
    try:
        log = read_log(args.data_dir)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    dev = [q for q in log if q.split == "dev"]
    test = [q for q in log if q.split == "test"]
    print(f"choosing settings on dev ({len(dev)} queries, {len(GRID['catalogue_weight']) * len(GRID['inner_word_factor']) * len(GRID['min_typo_chars'])} "
          "configurations)...", file=sys.stderr, flush=True)
    ranking, tie_break, trials = choose_on_dev(log, dev, args.seed)
    index = SuggestionIndex(index_candidates(log), ranking)
    rows = evaluate({"ours": ours(index), "baseline": PrefixBaseline(log, tie_break).suggest}, test, args)
    service = Ranking()
    header = [
        f"shelfwise eval suggest, {date.today().isoformat()}: Best Buy query log ({len(log)} queries; dev {len(dev)}, "
        f"test {len(test)}, split by a hash of the query); MRR@{CUTOFF} of the logged query on TEST.",
        f"ours: the service's SuggestionIndex over the log (popularity + 1 as clicked searches) and "
        f"{len(index_candidates(log)) - len(log)} category names; settings chosen on dev: {asdict(ranking)}"
        + ("" if ranking == service else f" (the service's defaults are {asdict(service)})"),
        f"baseline: plain prefix match over the logged queries, most popular first, ties by {tie_break} (chosen on dev)",
        f"typo: one seeded keyboard typo in the first 3, 4 and 5 letters (ASCII-letter prefixes only), mean per query; "
        f"weighted = by the log's popularity (queries of popularity 0 weigh nothing); {args.bootstrap} paired "
        f"bootstrap resamples of queries, seed {args.seed}",
    ]
    print_report(rows, header)
    if args.out is not None:
        args.out.write_text(json.dumps({"header": header, "rows": rows, "dev_trials": trials}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
