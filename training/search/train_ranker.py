"""`shelfwise train ranker`: the relevance ranker, gradient-boosted trees trained to rank on
relevance judgments (learning to rank).

What it learns: the order of a search's candidates from the relevance features ranking computes
(`services.ranking.relevance.RELEVANCE_FEATURES`: both spaces' cosines and ranks, BM25, the
query's category vote, ...), the field's standard recipe (LightGBM LambdaMART-style ranking, as
in Vespa's ESCI sample application and OpenSearch LTR; the XE-NDCG objective, chosen over
``lambdarank`` by cross-validation, `RankerSettings`). Training data is the judgments of any shop, in the
formats of DESIGN §5 (a catalogue file, query files, TREC qrels); by default the Instacart
benchmark's train and dev splits, every query set (English, Chinese, misspelt).

Features come from the running system, so the ranker learns from exactly what it will rank: the
five services start on free ports over the catalogue (the evaluation's cached PostgreSQL, see
`training.search.search_pipelines.FullPipeline`), and each query goes through query understanding and
retrieval as a Search sends it (`services.gateway.search.search_retrieve_request`); the
candidates' relevance features are computed by ranking's own code.

The exported model (``relevance_ranker/<next version>/``, ONNX-ML trees as the CTR head's, see
`training.ctr.ctr_trees.tree_ensemble_node`) outputs calibrated log-odds that a candidate is
relevant: the raw ranking score times a and plus b, fitted by logistic regression on
out-of-fold scores (grouped 5-fold over queries), so that ranking can add engagement on the same
scale and count "plausibly relevant" candidates. `threshold` in metadata.json is the probability
from which a candidate counts as relevant: the one that maximises F1 over the out-of-fold
candidates (precision and recall there are recorded next to it).

Settings (`RankerSettings`) were chosen by 5-fold cross-validation over the train and dev aisles
of the Instacart benchmark; the variants tried are listed in the README ("Search relevance").
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from services.common.model_versions import latest_version
from services.ranking.relevance import RELEVANCE_FEATURES
from services.ranking.scorers import RELEVANCE_RANKER_MODEL
from training.onnx_export import (
    VersionTarget,
    check_output,
    cpu_session,
    install_onnx,
    max_abs_difference,
    require_within,
)

FOLDS = 5
CANDIDATES = 200  # the gateway's default candidate count (SHELFWISE_GATEWAY_CANDIDATES)
OUTPUT_NAME = "relevance"
INPUT_NAME = "features"
MAX_EXPORT_DIFF = 1e-4


@dataclass(frozen=True)
class RankerSettings:
    # LightGBM's XE-NDCG objective (Bruch et al., 2019: a cross-entropy bound on NDCG for the
    # same boosted trees as LambdaMART): 5-fold CV NDCG@10 on Instacart train + dev 0.629 /
    # 0.525 / 0.587 (English / Chinese / misspelt, mean of 3 seeds) against lambdarank's 0.626 /
    # 0.511 / 0.575 with these features.
    objective: str = "rank_xendcg"
    n_estimators: int = 200
    learning_rate: float = 0.05
    num_leaves: int = 7
    min_child_samples: int = 50
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    truncation_level: int = 20
    seed: int = 7


@dataclass
class JudgedQuery:
    """One query's candidates as ranking saw them, and their grades (0 = not judged relevant)."""

    group: str  # the query set and id: queries with the same id in two sets are two groups
    fold_key: str
    product_ids: list[str]
    features: np.ndarray
    grades: np.ndarray


# --- features from the running system ------------------------------------------------------------


async def judged_queries(
    qu_address: str, retrieval_address: str, query_sets: Sequence, qrels: dict[str, dict[str, int]],
    candidates: int = CANDIDATES,
) -> list[JudgedQuery]:
    """Every judged query of `query_sets` through query understanding and retrieval, with the
    relevance features ranking computes for its candidates."""
    from shelfwise.common.v1 import common_pb2
    from shelfwise.query_understanding.v1 import query_understanding_pb2 as qu_pb2
    from shelfwise.query_understanding.v1 import query_understanding_pb2_grpc as qu_grpc
    from shelfwise.ranking.v1 import ranking_pb2
    from shelfwise.retrieval.v1 import retrieval_pb2_grpc

    from services.common.channels import create_channel
    from services.gateway.search import search_rank_inputs, search_retrieve_request
    from services.ranking.relevance import relevance_matrix
    from services.ranking.servicer import candidate_from_pb, preferences_from_pb

    judged = []
    async with create_channel(qu_address, retry_refused=True) as qu_channel, create_channel(
        retrieval_address, 64 << 20, retry_refused=True
    ) as r_channel:
        understand = qu_grpc.QueryUnderstandingServiceStub(qu_channel).Understand
        retrieve = retrieval_pb2_grpc.RetrievalServiceStub(r_channel).Retrieve
        for query_set in query_sets:
            for qid, text in query_set.queries.items():
                if qid not in qrels:
                    continue
                understood = await understand(qu_pb2.UnderstandRequest(query=text, request_id=qid), timeout=30)
                if not understood.search_text:
                    continue
                request = search_retrieve_request(understood, common_pb2.Filters(), qid, candidates)
                retrieved = await retrieve(request, timeout=60)
                found = [candidate_from_pb(c) for c in retrieved.candidates]
                if not found:
                    continue
                inputs = search_rank_inputs(understood)
                preferences = preferences_from_pb(ranking_pb2.RankRequest(**inputs))
                features, _ = relevance_matrix(found, preferences, bool(inputs["translated_query"]))
                grades = np.array([max(qrels[qid].get(c.product_id, 0), 0) for c in found], dtype=np.int32)
                judged.append(JudgedQuery(f"{query_set.name}/{qid}", qid, [c.product_id for c in found], features, grades))
    return judged


# --- training --------------------------------------------------------------------------------------


def fit(queries: Sequence[JudgedQuery], settings: RankerSettings):
    """A LightGBM ranker (queries without a relevant candidate teach nothing)."""
    import lightgbm

    useful = [q for q in queries if q.grades.any()]
    model = lightgbm.LGBMRanker(
        objective=settings.objective,
        n_estimators=settings.n_estimators,
        learning_rate=settings.learning_rate,
        num_leaves=settings.num_leaves,
        min_child_samples=settings.min_child_samples,
        subsample=settings.subsample,
        subsample_freq=1,
        colsample_bytree=settings.colsample_bytree,
        lambdarank_truncation_level=settings.truncation_level,
        random_state=settings.seed,
        n_jobs=1,
        verbose=-1,
    )
    model.fit(
        np.concatenate([q.features for q in useful]).astype(np.float64),
        np.concatenate([q.grades for q in useful]),
        group=[len(q.grades) for q in useful],
    )
    return model.booster_


def fold_of(key: str, folds: int = FOLDS) -> int:
    return int(hashlib.sha256(key.encode()).hexdigest(), 16) % folds


def out_of_fold_scores(queries: Sequence[JudgedQuery], settings: RankerSettings, folds: int = FOLDS) -> list[np.ndarray]:
    """Each query's raw scores from a ranker trained without its fold."""
    scores: list[np.ndarray | None] = [None] * len(queries)
    for fold in range(folds):
        held = [i for i, q in enumerate(queries) if fold_of(q.fold_key, folds) == fold]
        if not held:
            continue
        booster = fit([q for i, q in enumerate(queries) if fold_of(q.fold_key, folds) != fold], settings)
        for i in held:
            scores[i] = booster.predict(queries[i].features.astype(np.float64), raw_score=True)
    return scores


@dataclass(frozen=True)
class Calibration:
    """relevance log-odds = scale · raw score + offset; relevant from probability `threshold`."""

    scale: float
    offset: float
    threshold: float
    precision: float
    recall: float


def calibrate(scores: Sequence[np.ndarray], queries: Sequence[JudgedQuery]) -> Calibration:
    from sklearn.linear_model import LogisticRegression

    raw = np.concatenate(scores).reshape(-1, 1)
    relevant = (np.concatenate([q.grades for q in queries]) > 0).astype(int)
    fitted = LogisticRegression(C=1e6, max_iter=1000).fit(raw, relevant)
    scale, offset = float(fitted.coef_[0, 0]), float(fitted.intercept_[0])
    probability = 1.0 / (1.0 + np.exp(-(scale * raw[:, 0] + offset)))
    order = np.argsort(-probability)
    hits = np.cumsum(relevant[order])
    precision = hits / np.arange(1, len(order) + 1)
    recall = hits / max(int(relevant.sum()), 1)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    best = int(np.argmax(f1))
    return Calibration(scale, offset, float(probability[order][best]), float(precision[best]), float(recall[best]))


# --- export ----------------------------------------------------------------------------------------


def ranker_graph(booster, calibration: Calibration):
    """features float32 [N, F] -> relevance float32 [N, 1] = scale · trees(features) + offset."""
    import onnx
    from onnx import TensorProto, helper

    from training.ctr.ctr_trees import ONNX_ML_OPSET, ONNX_OPSET, Tower, tree_ensemble_node

    tower = Tower(booster=booster, base=0.0, rounds=booster.num_trees())
    nodes = [
        tree_ensemble_node(tower, INPUT_NAME, "raw"),
        helper.make_node("Mul", ["raw", "scale"], ["scaled"]),
        helper.make_node("Add", ["scaled", "offset"], [OUTPUT_NAME]),
    ]
    graph = helper.make_graph(
        nodes, "relevance_ranker",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", len(RELEVANCE_FEATURES)])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", 1])],
        initializer=[
            helper.make_tensor("scale", TensorProto.FLOAT, [1, 1], [calibration.scale]),
            helper.make_tensor("offset", TensorProto.FLOAT, [1, 1], [calibration.offset]),
        ],
    )
    proto = helper.make_model(
        graph, producer_name="shelfwise.training.train_ranker",
        opset_imports=[helper.make_opsetid("", ONNX_OPSET), helper.make_opsetid("ai.onnx.ml", ONNX_ML_OPSET)],
    )
    proto.ir_version = min(proto.ir_version, 9)  # what ONNX Runtime 1.x and Triton read
    onnx.checker.check_model(proto, full_check=True)
    return proto


def verify(onnx_path: Path, booster, calibration: Calibration, features: np.ndarray) -> float:
    """Max abs difference between ONNX Runtime and LightGBM (calibrated) on `features`."""
    session = cpu_session(onnx_path)
    worst = 0.0
    for size in (1, 7, len(features)):
        rows = np.asarray(features[:size], dtype=np.float32)
        got = session.run([OUTPUT_NAME], {INPUT_NAME: rows})[0]
        want = calibration.scale * booster.predict(rows.astype(np.float64), raw_score=True) + calibration.offset
        check_output(got, (len(rows), 1), "relevance", dtype=None)
        worst = max(worst, max_abs_difference([got[:, 0]], [want]))
    return require_within(worst, MAX_EXPORT_DIFF, "LightGBM")


def next_version(model_repository: Path) -> int:
    """One above the highest version holding a ranker."""
    return (latest_version(model_repository, RELEVANCE_RANKER_MODEL) or 0) + 1


def install(booster, calibration: Calibration, model_repository: Path, version: int, metadata: dict,
            features: np.ndarray) -> Path:
    import onnx

    def write(staged: Path) -> dict:  # checked by onnx's full checker in ranker_graph
        onnx.save(ranker_graph(booster, calibration), str(staged))
        return {"onnx_vs_lightgbm_max_abs_diff": float(f"{verify(staged, booster, calibration, features):.3e}")}

    return install_onnx(write, VersionTarget(Path(model_repository), RELEVANCE_RANKER_MODEL, version, metadata))


# --- the command ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Judgments:
    """What a ranker is trained on: a catalogue, judged query files, their qrels, and the
    line metadata.json describes them with."""

    catalog: Path
    query_files: Sequence[Path]
    qrels_file: Path
    describe: str


async def train_on(judgments: Judgments, model_repository: Path, cache: Path, settings: RankerSettings,
                   version: int | None) -> Path:
    """Judge candidates through the running stack, fit and calibrate the ranker, install it."""
    from services.retrieval.catalog import read_catalog
    from training.search.search_judgments import read_qrels, read_queries
    from training.search.search_pipelines import FullPipeline

    catalog, query_files, qrels_file, describe = (
        judgments.catalog, judgments.query_files, judgments.qrels_file, judgments.describe)
    started = time.monotonic()
    products, errors = read_catalog(catalog)
    if errors:
        raise ValueError(f"{catalog}: {len(errors)} invalid rows, first: {errors[0].message}")
    query_sets = [read_queries(path) for path in query_files]
    qrels = read_qrels(qrels_file)
    system = await FullPipeline.start(catalog, products, model_repository, cache)
    try:
        queries = await judged_queries(
            system.address("query_understanding"), system.address("retrieval"), query_sets, qrels
        )
    finally:
        await system.close()
    useful = [q for q in queries if q.grades.any()]
    if len(useful) < FOLDS:
        raise ValueError(f"only {len(useful)} judged queries have a relevant candidate: too few to train a ranker")
    print(f"ranker: {len(queries)} queries, {sum(len(q.grades) for q in queries)} candidates "
          f"({len(useful)} queries with a relevant one) in {time.monotonic() - started:.0f}s", flush=True)
    calibration = calibrate(out_of_fold_scores(queries, settings), queries)
    booster = fit(queries, settings)
    version = version or next_version(model_repository)
    metadata = {
        "model": RELEVANCE_RANKER_MODEL,
        "version": version,
        "kind": f"LightGBM ranker ({settings.objective}) trained on relevance judgments",
        "features": list(RELEVANCE_FEATURES),
        "outputs": [OUTPUT_NAME],
        "threshold": round(calibration.threshold, 6),
        "calibration": {k: round(v, 6) for k, v in asdict(calibration).items()},
        "settings": asdict(settings),
        "trained_on": describe,
        "queries": len(queries),
        "candidates": int(sum(len(q.grades) for q in queries)),
        "encoders": system.encoders,
    }
    features = np.concatenate([q.features for q in queries[:50]])
    path = install(booster, calibration, model_repository, version, metadata, features)
    print(f"relevance_ranker version {version}: {path} (relevant from probability {calibration.threshold:.3f}: "
          f"precision {calibration.precision:.2f}, recall {calibration.recall:.2f} out of fold; "
          f"{time.monotonic() - started:.0f}s)", flush=True)
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from training.search.instacart_eval import add_benchmark_arguments

    add_benchmark_arguments(parser)
    parser.add_argument("--split", choices=("train", "train+dev"), default="train+dev",
                        help="Instacart splits to train on (default: train+dev; the test split is never read)")
    parser.add_argument("--catalog", type=Path, help="train on your own judgments: catalogue file ...")
    parser.add_argument("--queries", type=Path, action="append", help="... qid<TAB>query files (repeat) ...")
    parser.add_argument("--qrels", type=Path, help="... and TREC qrels")
    parser.add_argument("--version", type=int, help="relevance_ranker version to write (default: the next one)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shelfwise train ranker", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    settings = RankerSettings()
    try:
        if args.catalog or args.queries or args.qrels:
            if not (args.catalog and args.queries and args.qrels):
                parser.error("--catalog, --queries and --qrels go together")
            catalog, query_files, qrels_file = args.catalog, args.queries, args.qrels
            describe = f"{args.catalog.name}, {', '.join(p.name for p in args.queries)}, {args.qrels.name}"
        else:
            catalog, query_files, qrels_file, describe = benchmark_inputs(args)
        judgments = Judgments(catalog, query_files, qrels_file, describe)
        asyncio.run(train_on(judgments, args.model_repository, args.cache, settings, args.version))
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def benchmark_inputs(args) -> tuple[Path, list[Path], Path, str]:
    """The Instacart benchmark's files for `args.split` (qrels of two splits concatenated)."""
    from training.search import instacart
    from training.search.instacart_eval import build_benchmark

    files = build_benchmark(args)
    splits = args.split.split("+")
    query_files = [files.queries(split, name) for split in splits for name in instacart.QUERY_SETS]
    qrels = files.folder / f"{args.split}.qrels"
    qrels.write_text("".join(files.qrels(split).read_text() for split in splits))
    return files.catalog, query_files, qrels, f"Instacart benchmark, {args.split} split(s), {', '.join(instacart.QUERY_SETS)}"


if __name__ == "__main__":
    raise SystemExit(main())
