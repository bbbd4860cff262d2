"""`shelfwise simulate --compare learning`: what ranking learns from a shop's behaviour, measured
against a fair control, one learned part at a time, over several seeds.

THIS IS A SIMULATION (training/experiments/simulator.py: the shopper model and its assumptions).

Per seed, in one PostgreSQL (the catalogue is imported once):

1. Warm-up (experiment ``NAME-sSEED-warmup``, arms ``control`` and ``bm25``): shoppers whose
   intents come from the Instacart benchmark's train and dev aisles (train only with
   ``--intent-aisles dev``, the setting to develop on), with live popularity.
2. Training: ``shelfwise train ctr`` on the warm-up window (a new ``ctr_head`` version).
3. Test (experiment ``NAME-sSEED``): other shoppers (the other half of the orders, other user
   ids) whose intents come from the test-split aisles (dev with ``--intent-aisles dev``), so neither an aisle nor a query string
   of the test was seen in the warm-up. Learned state is frozen: popularity reads only the
   warm-up window (``SHELFWISE_POPULARITY_SINCE``/``_UNTIL``), the CTR head is the version just
   trained, pinned; histories are the shoppers' own (each shopper is in one arm). Arms:

   - ``bm25`` (reference only: lexical retrieval in BM25 order, no query understanding);
   - ``control``: query understanding with translation, hybrid retrieval, the relevance ranker
     (trained on judgments, not behaviour), nothing learned from behaviour;
   - ``ctr-head``, ``popularity``, ``personalization``: the control plus that one part;
   - ``learned-all``: the control plus all three.

   A share of first pages (``--exploration-share``) is shown in a sampled order with logged
   propensities; the A/B report leaves them out, and `shelfwise eval offpolicy` estimates each
   arm's CTR and CVR from them (training/experiments/offpolicy.py), printed next to the arm's A/B figure.

Report: per seed and pooled over seeds, per language of the query (``en``, ``zh``) and overall,
each arm's CTR and CVR and its lift over the control with a 95% bootstrap interval over users.
Revenue is synthetic (a hashed price times a random quantity), so revenue lift only restates
CVR lift; it is not reported here.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from training.experiments.arms import ARM_PRESETS
from training.experiments.shop_log import logged_searches, train_ctr_head
from training.experiments.shoppers import ASSUMPTIONS, Audience, load_world, parse_language_mix, plan_shoppers
from training.experiments.simulator import PeriodOptions, SimulatedShop, run_period

TEST_ARMS = ("bm25", "control", "ctr-head", "popularity", "personalization", "learned-all")
TREATMENTS = ("ctr-head", "popularity", "personalization", "learned-all")
WARMUP_ARMS = ("control", "bm25")
LANGUAGES = ("en", "zh", "all")
LIFT_METRICS = ("ctr", "cvr")
# Test-period aisles -> warm-up aisles (benchmark splits): "test" is the measurement, "dev" the
# split to develop on (settings are chosen on dev runs, never on test runs).
COMPARISON_AISLES = {"test": "train-dev", "dev": "train"}


def language_of(query: str) -> str:
    """The simulated shopper's language, read from their query: Chinese shoppers type Chinese."""
    return "zh" if any("\u4e00" <= ch <= "\u9fff" for ch in query) else "en"


def add_arguments(parser) -> None:
    """`shelfwise simulate`'s options: the simulator's, and the comparison's own."""
    from training.experiments.simulator import add_arguments as add_simulator_arguments

    add_simulator_arguments(parser)
    parser.add_argument("--compare", choices=["learning"],
                        help="learning: per seed a warm-up, CTR head training and a test period with frozen learned "
                             "state, arms bm25 (reference), control and each behaviour-learned part "
                             "(training/experiments/learning_comparison.py); uses --warmup-shoppers and --shoppers per seed")
    parser.add_argument("--seeds", default="21,22,23", help="--compare: comma-separated seeds")
    parser.add_argument("--exploration-share", type=float, default=0.2,
                        help="--compare: share of test-period first pages shown in a sampled order for off-policy "
                             "evaluation (left out of the A/B figures)")


def comparison_config(name: str, arms, ctr_head_version: int | None) -> dict:
    """The experiments file: every preset arm, with the CTR head version pinned where used."""
    settings = []
    for arm in arms:
        setting = {"name": arm, **ARM_PRESETS[arm]}
        if ctr_head_version is not None and setting.get("ctr_head", True) and setting.get("ranking", "model") == "model":
            setting["ctr_head_version"] = ctr_head_version
        settings.append(setting)
    return {"experiments": [{"name": name, "control": arms[0] if arms[0] != "bm25" else arms[1], "arms": settings}]}


def lift_rows(report: dict, language: str, seeds) -> list[dict]:
    rows = []
    for arm in report["arms"]:
        lifts = arm.get("lift_vs_control")
        if not lifts or arm["arm"] == "bm25":
            continue
        for metric in LIFT_METRICS:
            relative = lifts[metric]["relative"]
            rows.append({"arm": arm["arm"], "control": report["control"], "language": language, "metric": metric,
                         "lift": relative["value"], "ci_low": relative["low"], "ci_high": relative["high"],
                         "seeds": seeds})
    return rows


def by_language(records) -> dict[str, list]:
    return {"en": [r for r in records if language_of(r.query) == "en"],
            "zh": [r for r in records if language_of(r.query) == "zh"], "all": list(records)}


def format_table(report: dict, title: str) -> str:
    lines = [title, f"  {'arm':<16} {'users':>6} {'searches':>8}  {'CTR':<24} {'CVR':<24} {'CTR lift':<24} CVR lift"]
    for arm in report["arms"]:
        m = arm["metrics"]
        lift = arm.get("lift_vs_control", {})

        def cell(interval: dict, percent: bool = False) -> str:
            scale, unit = (100, "%") if percent else (1, "")
            return (f"{interval['value'] * scale:+.1f}{unit} [{interval['low'] * scale:+.1f}, {interval['high'] * scale:+.1f}]"
                    if percent else f"{interval['value']:.4f} [{interval['low']:.4f}, {interval['high']:.4f}]")

        lifts = [cell(lift[k]["relative"], True) if k in lift else "(control)" for k in LIFT_METRICS]
        label = arm["arm"] + (" (ref.)" if arm["arm"] == "bm25" else "")
        lines.append(f"  {label:<16} {arm['units']:>6} {arm['searches']:>8}  {cell(m['ctr']):<24} {cell(m['cvr']):<24} "
                     f"{lifts[0]:<24} {lifts[1]}")
    return "\n".join(lines)


async def compare_learning(args) -> int:
    from services.local.postgres import EmbeddedPostgres
    from services.common.config import model_repository, shared_data_dir
    from training.experiments.experiment_report import analyse, read_searches
    from training.experiments.offpolicy import read_explored, target_policy

    started = time.monotonic()
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        language_mix = parse_language_mix(args.language_mix)
    except ValueError as error:
        print(f"--seeds / --language-mix: {error}", file=sys.stderr)
        return 2
    if not seeds or args.shoppers < len(TEST_ARMS) or args.warmup_shoppers < 1:
        print(f"--compare learning: give --seeds, --warmup-shoppers >= 1 and --shoppers >= {len(TEST_ARMS)}",
              file=sys.stderr)
        return 2
    if not 0.0 <= args.exploration_share < 1.0:
        print("--exploration-share: must be in [0, 1)", file=sys.stderr)
        return 2
    if args.intent_aisles not in COMPARISON_AISLES:
        print(f"--compare learning: --intent-aisles must be {' or '.join(COMPARISON_AISLES)} (the test period's "
              "aisles; the warm-up uses the splits before it)", file=sys.stderr)
        return 2
    warmup_aisles = COMPARISON_AISLES[args.intent_aisles]
    world = load_world(args.data_dir or shared_data_dir())
    state = Path(args.state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    try:
        repository = scratch_repository(Path(args.model_repository or model_repository()).resolve(),
                                        state / "model_repository")
    except FileNotFoundError as error:
        print(error, file=sys.stderr)
        return 2
    print(f"model repository: {repository} (the shop's models linked, the CTR heads trained here)", file=sys.stderr)
    postgres = EmbeddedPostgres(state / "postgres")
    url = postgres.start()
    all_records, per_seed, offpolicy_rows, lifts, logs = [], {}, [], [], {}
    try:
        for seed in seeds:
            if await logged_searches(url, f"{args.experiment}-s{seed}"):
                print(f"--experiment: {args.experiment}-s{seed} already has searches in {state / 'postgres'}; "
                      "choose another --experiment or a fresh --state-dir", file=sys.stderr)
                return 2
        for seed in seeds:
            name = f"{args.experiment}-s{seed}"
            warmup_shoppers = plan_shoppers(world, args.warmup_shoppers, seed, "warmup",
                                            Audience(language_mix, warmup_aisles, f"{name}-warmup"))
            print(f"seed {seed}: warm-up, {len(warmup_shoppers)} shoppers on {warmup_aisles} aisles", file=sys.stderr)
            _, warm_since, warm_until = await run_period(
                SimulatedShop(url, repository, state), comparison_config(f"{name}-warmup", WARMUP_ARMS, None),
                warmup_shoppers, world, PeriodOptions(concurrency=args.concurrency, quiet=args.quiet,
                                                      stop_after_purchase=args.stop_after_purchase),
            )
            label = await train_ctr_head(url, warm_since, warm_until, repository)
            version = int(label.rpartition("/")[2])
            frozen = {"SHELFWISE_POPULARITY_SINCE": warm_since.isoformat(),
                      "SHELFWISE_POPULARITY_UNTIL": warm_until.isoformat(),
                      "SHELFWISE_EXPLORATION_SHARE": str(args.exploration_share)}
            test_shoppers = plan_shoppers(world, args.shoppers, seed, "test", Audience(language_mix, args.intent_aisles, name))
            print(f"seed {seed}: test, {len(test_shoppers)} shoppers on {args.intent_aisles} aisles, ctr_head/{version}, popularity "
                  f"frozen on [{warm_since.isoformat()}, {warm_until.isoformat()})", file=sys.stderr)
            stats, since, until = await run_period(
                SimulatedShop(url, repository, state), comparison_config(name, TEST_ARMS, version), test_shoppers,
                world, PeriodOptions(environ=frozen, concurrency=args.concurrency, quiet=args.quiet,
                                     stop_after_purchase=args.stop_after_purchase),
            )
            records = await read_searches(url, name, since, until)
            all_records += records
            reports = {lang: analyse(subset, name, "control", args.samples)
                       for lang, subset in by_language(records).items()}
            per_seed[seed] = {"ctr_head": label, "warmup": [warm_since.isoformat(), warm_until.isoformat()],
                              "test": [since.isoformat(), until.isoformat()], "searches": stats.searches,
                              "failed_searches": stats.failed_searches, "degraded": stats.degraded, "reports": reports}
            for lang in LANGUAGES:
                lifts += lift_rows(reports[lang], lang, [seed])
                print("\n" + format_table(reports[lang], f"seed {seed}, {lang}:"))
            explored = await read_explored(url, since, until, name)
            logs[seed] = {arm: (target_policy(f"{arm}@{version}" if "ctr_head" in _parts(arm) else arm, repository, {}),
                                explored) for arm in TEST_ARMS[1:]}
            print(f"\nseed {seed}, off-policy estimates from {len(explored)} explored searches against the A/B:")
            offpolicy_rows += offpolicy_against_ab([logs[seed][arm] for arm in TEST_ARMS[1:]], reports["all"], seed,
                                                   args.samples)
        pooled = {lang: analyse(subset, args.experiment, "control", args.samples)
                  for lang, subset in by_language(all_records).items()}
        for lang in LANGUAGES:
            lifts += lift_rows(pooled[lang], lang, "pooled")
            print("\n" + format_table(pooled[lang], f"POOLED over seeds {args.seeds}, {lang}:"))
        print(f"\nPOOLED off-policy estimates against the A/B, seeds {args.seeds}:")
        offpolicy_rows += offpolicy_against_ab([[logs[seed][arm] for seed in seeds] for arm in TEST_ARMS[1:]],
                                               pooled["all"], "pooled", args.samples)
    finally:
        postgres.stop()
    elapsed = time.monotonic() - started
    print(f"\n(SIMULATION: see the assumptions in training/experiments/simulator.py; revenue is synthetic and not reported.) "
          f"Took {elapsed / 60:.1f} minutes.")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        result = {"simulation": True, "assumptions": list(ASSUMPTIONS), "seeds": seeds, "language_mix": language_mix,
                  "shoppers_per_seed": args.shoppers, "warmup_shoppers_per_seed": args.warmup_shoppers,
                  "exploration_share": args.exploration_share, "stop_after_purchase": args.stop_after_purchase,
                  "lifts": lifts, "pooled": pooled,
                  "per_seed": per_seed, "offpolicy": offpolicy_rows, "minutes": elapsed / 60,
                  "warmup_aisles": f"Instacart benchmark {warmup_aisles} split aisles",
                  "test_aisles": f"Instacart benchmark {args.intent_aisles} split aisles"}
        args.out.write_text(json.dumps(result, indent=2, default=float, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"report: {args.out}")
    return 0


def scratch_repository(source: Path, target: Path) -> Path:
    """A model repository for the comparison's CTR heads: every model's config copied and its
    version folders linked from `source`, so that heads trained on simulated shoppers never
    land where `shelfwise up` would serve them."""
    import shutil

    if not source.is_dir():
        raise FileNotFoundError(f"model repository {source} does not exist; run `shelfwise export` first")
    for model in sorted(p for p in source.iterdir() if p.is_dir()):
        folder = target / model.name
        folder.mkdir(parents=True, exist_ok=True)
        for entry in model.iterdir():
            placed = folder / entry.name
            if entry.name.isdigit() and entry.is_dir() and not placed.exists():
                placed.symlink_to(entry.resolve(), target_is_directory=True)
            elif entry.is_file() and not placed.exists():
                shutil.copy2(entry, placed)
    return target


def offpolicy_against_ab(logs, report: dict, seed, samples: int) -> list[dict]:
    """Each arm's off-policy estimates (from the explored searches of every arm) next to its A/B
    figures (non-explored searches); `logs`: per arm, a (policy, searches) pair or a list of
    them (pooled seeds)."""
    from training.experiments.offpolicy import ESTIMATORS, estimate_pooled

    rows = []
    print(f"  {'arm':<16} {'A/B CTR':<24} {'PBM':<24} {'IPS':<24} {'SNIPS':<24} within A/B interval")
    for arm_logs in logs:
        arm_logs = arm_logs if isinstance(arm_logs, list) else [arm_logs]
        result = estimate_pooled(arm_logs, samples)
        ab = next(a for a in report["arms"] if a["arm"] == result["policy"])["metrics"]
        within = {e: bool(ab["ctr"]["low"] <= result[f"ctr_{e}"]["value"] <= ab["ctr"]["high"]) for e in ESTIMATORS}
        rows.append({"seed": seed, "arm": result["policy"], "ab_ctr": ab["ctr"], "ab_cvr": ab["cvr"], **result,
                     "ctr_within_ab_interval": within})

        def cell(interval: dict) -> str:
            return f"{interval['value']:.4f} [{interval['low']:.4f}, {interval['high']:.4f}]"

        print(f"  {result['policy']:<16} {cell(ab['ctr']):<24} {cell(result['ctr_pbm']):<24} {cell(result['ctr_ips']):<24} "
              f"{cell(result['ctr_snips']):<24} " + " ".join(f"{e}:{'yes' if ok else 'no'}" for e, ok in within.items()))
    return rows


def _parts(arm: str) -> set[str]:
    preset = ARM_PRESETS[arm]
    return {part for part in ("popularity", "personalization", "ctr_head") if preset.get(part, True)}


def main(argv: list[str] | None = None) -> int:
    """`shelfwise simulate`: one simulated A/B test, or with --compare learning the comparison."""
    import argparse

    from services.local.running import run_until_stopped
    from training.experiments.simulator import simulate

    parser = argparse.ArgumentParser(
        prog="shelfwise simulate", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="A SIMULATED A/B test: Instacart-grounded shoppers search and buy through the real stack "
                    "(see training/experiments/simulator.py for the shopper model and its assumptions).",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_until_stopped(compare_learning(args) if args.compare == "learning" else simulate(args))

