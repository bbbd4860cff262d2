"""`shelfwise eval search`: search relevance of several pipelines, side by side, on any
catalogue, queries and judgments.

Inputs are the formats of DESIGN §5, so judgments from any source plug in: a catalogue file
(JSONL/CSV/Parquet, the import format), one or more query files (``qid<TAB>query``; each file
is a *query set*, named after the file) and TREC qrels (``qid 0 docid grade``). Every query
set is run through every pipeline; NDCG@10, Recall@100 and MRR@10 are computed by ir-measures
(pytrec_eval underneath) per query, then averaged per set, per detected language and overall,
with percentile-bootstrap 95% intervals over queries.

Pipelines run the real stages:

- ``bm25``: retrieval's own lexical index (tantivy, a Lucene-style engine; English stemming,
  jieba for Chinese) — what Shelfwise's lexical stage returns;
- ``bm25s``: the bm25s library (Lucene's BM25 variant, English stemmer and stop words), an
  independent implementation as a second baseline;
- ``dense-zeroshot`` (all-MiniLM-L6-v2, ``text_encoder``, retrieval's English space),
  ``dense-use`` (the Universal Sentence Encoder, ``text_encoder_use``, its multilingual space),
  ``dense-multilingual`` (multilingual-e5-small, ``text_encoder_multilingual`` version 1) and
  ``dense-finetuned`` (the latest fine-tuned ``text_encoder_multilingual`` version): the served
  ONNX models through the embedded runtime, exact cosine search over the whole catalogue;
- ``hybrid``: bm25, dense-zeroshot and dense-use fused by retrieval's fusion function with
  retrieval's settings, as retrieval fuses its lists (without query understanding, so without
  the English rendering of Chinese queries);
- ``full``: everything Shelfwise does. The five services start on free ports over an embedded
  PostgreSQL, the catalogue is imported through ``UpsertProducts``, and every query goes
  through ``gateway.Search`` (query understanding, retrieval, ranking) for 100 results.

With ``full`` among the pipelines, the report also compares it with every other pipeline on the
same queries: the mean per-query difference in NDCG@10 with a paired percentile-bootstrap 95%
interval (queries resampled, both pipelines' values kept together).

Catalogue embeddings are cached per model file and catalogue under ``.shelfwise/eval/``, so a
second run only encodes the queries.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from services.common.config import model_repository
from services.local.running import run_until_stopped
from training.search.search_judgments import MEASURE_LABELS, MEASURES, QuerySet, evaluate_run, read_qrels, read_queries
from training.search.search_pipelines import (
    Bm25sPipeline,
    DensePipeline,
    FullPipeline,
    HybridPipeline,
    LexicalPipeline,
    Pipeline,
    encode_catalog,
    model_fingerprint,
)
from training.stats import mean_interval, paired_difference_interval

BOOTSTRAP_SAMPLES = 10_000
BOOTSTRAP_SEED = 7
PIPELINES = ("bm25", "bm25s", "dense-zeroshot", "dense-use", "dense-multilingual", "dense-finetuned", "hybrid", "full")
# The dense pipelines that read one model of the repository (version 1 unless pinned with "@").
DENSE_MODELS = {
    "dense-zeroshot": "text_encoder",
    "dense-use": "text_encoder_use",
    "dense-multilingual": "text_encoder_multilingual",
}
# The dense lists `hybrid` fuses with bm25, as retrieval fuses its English and multilingual spaces.
HYBRID_DENSE = ("dense-zeroshot", "dense-use")
DEFAULT_CACHE = Path(".shelfwise") / "eval"

def pipeline_name(value: str) -> str:
    """argparse type of --pipeline: one of PIPELINES, or a dense pipeline over a pinned version
    of its model ("dense-multilingual@2": text_encoder_multilingual version 2)."""
    base, pinned, version = value.partition("@")
    if not pinned and base in PIPELINES:
        return value
    if pinned and base in DENSE_MODELS and version.isdigit() and int(version) >= 1:
        return value
    raise argparse.ArgumentTypeError(
        f"{value!r} is not a pipeline: choose from {', '.join(PIPELINES)}, or pin a version of "
        f"{' / '.join(DENSE_MODELS)} as NAME@VERSION (e.g. dense-multilingual@2)"
    )


# ------------------------------------------------------------------------ metrics


def query_language(text: str) -> str:
    from services.query_understanding.language import detect_language

    return detect_language(text)[0]


# ---------------------------------------------------------------------- the command


@dataclass
class Evaluation:
    catalog: Path
    query_sets: list[QuerySet]
    qrels: dict[str, dict[str, int]]
    pipelines: list[str]
    model_repository: Path
    cache: Path
    results: dict = field(default_factory=dict)
    rankings: dict = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    async def run(self) -> dict:
        from services.retrieval.catalog import read_catalog

        products, errors = read_catalog(self.catalog)
        if errors:
            raise ValueError(f"{self.catalog}: {len(errors)} invalid rows, first: {errors[0].message}")
        ids = [p.id for p in products]
        unknown = {doc for judged in self.qrels.values() for doc in judged} - set(ids)
        if unknown:
            print(f"warning: {len(unknown)} judged product ids are not in the catalogue", file=sys.stderr)
        for query_set in self.query_sets:
            unjudged = [qid for qid in query_set.queries if qid not in self.qrels]
            if unjudged:
                print(f"warning: {query_set.name}: {len(unjudged)} queries have no judgments and are skipped "
                      f"(e.g. {unjudged[0]!r})", file=sys.stderr)
        self.cache.mkdir(parents=True, exist_ok=True)
        built = await self._build(products, ids)
        try:
            for name in self.pipelines:
                pipeline = built[name]
                for query_set in self.query_sets:
                    judged = [qid for qid in query_set.queries if qid in self.qrels]
                    started = time.perf_counter()
                    rankings = await pipeline.search([query_set.queries[qid] for qid in judged])
                    elapsed = time.perf_counter() - started
                    per_query = dict(zip(judged, rankings))
                    self.rankings[(name, query_set.name)] = per_query
                    self.results[(name, query_set.name)] = evaluate_run(self.qrels, per_query)
                    print(f"  {name} on {query_set.name}: {len(judged)} queries in {elapsed:.1f}s",
                          file=sys.stderr, flush=True)
        finally:
            for pipeline in built.values():
                await pipeline.close()
        degraded = getattr(built.get("full"), "degraded", None)
        if degraded:
            self.notes["full"] += "; DEGRADED responses: " + ", ".join(f"{k} x{v}" for k, v in sorted(degraded.items()))
        return self.report()

    async def _build(self, products, ids) -> dict[str, Pipeline]:
        from services.common.inference import EmbeddedOnnxRuntime, find_model
        from services.common.text_encoder import TextEncoder
        from services.retrieval.fusion import Fusion

        wanted = set(self.pipelines)
        built: dict[str, Pipeline] = {}
        if wanted & {"bm25", "hybrid"}:
            built["bm25"] = LexicalPipeline(products)
        if "bm25s" in wanted:
            built["bm25s"] = Bm25sPipeline(products)

        dense_models = {name: (model, 1) for name, model in DENSE_MODELS.items()}
        finetuned = finetuned_encoder(self.model_repository)
        if finetuned is None and "dense-finetuned" in wanted:
            raise ValueError("dense-finetuned needs a fine-tuned text_encoder_multilingual (version >= 2): "
                             "run `shelfwise train encoder` first")
        dense_models["dense-finetuned"] = ("text_encoder_multilingual", finetuned.version if finetuned else None)
        needed = [name for name in dense_models if name in wanted or (name in HYBRID_DENSE and "hybrid" in wanted)]
        # "dense-multilingual@2": the same pipeline over a pinned version (an int8 version, say).
        for name in sorted(wanted):
            base, pinned, version = name.partition("@")
            if pinned:
                dense_models[name] = (DENSE_MODELS[base], int(version))
                needed.append(name)
        for name in needed:
            model, version = dense_models[name]
            found = find_model(self.model_repository, model, version)
            if found is None:
                raise ValueError(f"{name} needs {model} version {version or 'latest'} in {self.model_repository}: "
                                 "run `shelfwise export`")
            backend = EmbeddedOnnxRuntime(self.model_repository, {model: found.version})
            encoder = TextEncoder(backend, model_name=model)
            vectors = await encode_catalog(encoder, products, self.cache, model_fingerprint(found.path))
            built[name] = DensePipeline(name, encoder, vectors, ids)
            self.notes[name] = f"{model} v{found.version}"
        if "hybrid" in wanted:
            fuse = Fusion.from_env()
            built["hybrid"] = HybridPipeline(built["bm25"], *(built[name] for name in HYBRID_DENSE), fuse.fuse_rankings)
            self.notes["hybrid"] = f"bm25 + {' + '.join(HYBRID_DENSE)}, {fuse.describe()}"
        if "full" in wanted:
            built["full"] = await FullPipeline.start(self.catalog, products, self.model_repository, self.cache)
            self.notes["full"] = "gateway.Search over the five services"
        return {name: built[name] for name in built}

    def report(self) -> dict:
        """Means and intervals per (pipeline, query set), per language and overall."""
        rows = []
        for query_set in self.query_sets:
            languages: dict[str, list[str]] = {}
            for qid, text in query_set.queries.items():
                if qid in self.qrels:
                    language = query_set.languages.get(qid) or query_language(text)
                    languages.setdefault(language, []).append(qid)
            groups = [("all", [qid for qid in query_set.queries if qid in self.qrels])]
            if len(languages) > 1:
                groups += sorted(languages.items())
            for name in self.pipelines:
                scores = self.results[(name, query_set.name)]
                for language, qids in groups:
                    row = {"pipeline": name, "query_set": query_set.name, "language": language, "queries": len(qids)}
                    for measure in MEASURES:
                        mean, low, high = mean_interval([scores.per_query[measure][q] for q in qids], BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED)
                        row[MEASURE_LABELS[measure]] = {"mean": mean, "ci95": [low, high]}
                    rows.append(row)
        overall = []
        for name in self.pipelines:
            values = {m: [] for m in MEASURES}
            for query_set in self.query_sets:
                scores = self.results[(name, query_set.name)]
                for measure in MEASURES:
                    values[measure] += list(scores.per_query[measure].values())
            row = {"pipeline": name, "query_set": "all sets", "language": "all", "queries": len(values[MEASURES[0]])}
            for measure in MEASURES:
                mean, low, high = mean_interval(values[measure], BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED)
                row[MEASURE_LABELS[measure]] = {"mean": mean, "ci95": [low, high]}
            overall.append(row)
        return {
            "catalog": str(self.catalog),
            "query_sets": [q.name for q in self.query_sets],
            "pipelines": {name: self.notes.get(name, "") for name in self.pipelines},
            "bootstrap": {"samples": BOOTSTRAP_SAMPLES, "seed": BOOTSTRAP_SEED, "interval": "percentile 95%"},
            "rows": rows,
            "overall": overall if len(self.query_sets) > 1 else [],
            "paired": self.paired_differences(),
        }

    def paired_differences(self, pipeline: str = "full", measure: str = "nDCG@10") -> list[dict]:
        """`pipeline` minus each other pipeline, per query set: the mean per-query difference
        and its paired bootstrap interval (empty when `pipeline` was not run)."""
        if pipeline not in self.pipelines:
            return []
        rows = []
        for query_set in self.query_sets:
            ours = self.results[(pipeline, query_set.name)].per_query[measure]
            for other in self.pipelines:
                if other == pipeline:
                    continue
                theirs = self.results[(other, query_set.name)].per_query[measure]
                mean, low, high = paired_difference_interval(
                    [ours[qid] for qid in ours], [theirs[qid] for qid in ours], BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED)
                rows.append({"pipeline": pipeline, "baseline": other, "query_set": query_set.name,
                             "measure": MEASURE_LABELS[measure], "queries": len(ours),
                             "difference": {"mean": mean, "ci95": [low, high]}})
        return rows


def format_table(report: dict) -> str:
    labels = list(MEASURE_LABELS.values())
    rows = report["rows"] + report["overall"]
    # Wide enough for a pinned pipeline name ("dense-multilingual@2") and a long query set name.
    width = max([19, *(len(row["pipeline"]) for row in rows)])
    set_width = max([16, *(len(row["query_set"]) for row in rows)])
    header = f"{'query set':<{set_width}} {'lang':<5} {'pipeline':<{width}} {'n':>4}  " + "  ".join(f"{l:>23}" for l in labels)
    lines = [header, "-" * len(header)]
    previous = None
    for row in rows:
        key = (row["query_set"], row["language"])
        if previous is not None and key != previous:
            lines.append("")
        previous = key
        cells = []
        for label in labels:
            value = row[label]
            cells.append(f"{value['mean']:.3f} [{value['ci95'][0]:.3f}, {value['ci95'][1]:.3f}]".rjust(23))
        lines.append(
            f"{row['query_set']:<{set_width}} {row['language']:<5} {row['pipeline']:<{width}} {row['queries']:>4}  "
            + "  ".join(cells)
        )
    lines.append("")
    lines.append("mean [95% bootstrap interval over queries]; pipelines: " + "; ".join(
        f"{name} = {note}" for name, note in report["pipelines"].items() if note))
    paired = report.get("paired") or []
    if paired:
        lines += ["", f"paired differences, {paired[0]['measure']} (mean per-query difference [95% paired bootstrap interval]):"]
        for query_set in dict.fromkeys(row["query_set"] for row in paired):
            cells = [
                f"{row['pipeline']} - {row['baseline']} {row['difference']['mean']:+.3f} "
                f"[{row['difference']['ci95'][0]:+.3f}, {row['difference']['ci95'][1]:+.3f}]"
                for row in paired if row["query_set"] == query_set
            ]
            lines.append(f"  {query_set:<{set_width}} " + "; ".join(cells))
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["rows"] if r["language"] == "all"]
    sets = list(dict.fromkeys(r["query_set"] for r in rows))
    pipelines = list(dict.fromkeys(r["pipeline"] for r in rows))
    figure, axis = plt.subplots(figsize=(max(6, 1.6 * len(sets) * len(pipelines) / 3), 4.5))
    width = 0.8 / len(pipelines)
    for index, pipeline in enumerate(pipelines):
        means, errors = [], [[], []]
        for query_set in sets:
            row = next(r for r in rows if r["pipeline"] == pipeline and r["query_set"] == query_set)
            value = row["NDCG@10"]
            means.append(value["mean"])
            errors[0].append(value["mean"] - value["ci95"][0])
            errors[1].append(value["ci95"][1] - value["mean"])
        positions = np.arange(len(sets)) + (index - (len(pipelines) - 1) / 2) * width
        axis.bar(positions, means, width, yerr=errors, capsize=3, label=pipeline)
    axis.set_xticks(np.arange(len(sets)), sets)
    axis.set_ylabel("NDCG@10 (95% bootstrap interval)")
    axis.set_title(f"Search relevance on {Path(report['catalog']).parent.name or report['catalog']}")
    axis.legend(fontsize=8, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--catalog", required=True, type=Path, help="catalogue file (JSONL, CSV or Parquet)")
    parser.add_argument("--queries", required=True, type=Path, action="append",
                        help="qid<TAB>query file; repeat for several query sets")
    parser.add_argument("--qrels", required=True, type=Path, help="TREC qrels: qid 0 docid grade")
    parser.add_argument("--pipeline", action="append", type=pipeline_name,
                        help=f"repeat to compare (default: all available of {', '.join(PIPELINES)}); "
                        "dense-zeroshot@N / dense-multilingual@N pin the model's version N")
    parser.add_argument("--model-repository", type=Path, default=model_repository())
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="embedding and system cache folder")
    parser.add_argument("--out", type=Path, help="write the report as JSON")
    parser.add_argument("--plot", type=Path, help="write an NDCG@10 bar chart (PNG)")
    parser.add_argument("--runs", type=Path, help="also write every ranking as a TREC run file into this folder")


def finetuned_encoder(repository: Path):
    """The fine-tuned multilingual encoder the services would serve: the version pinned in
    SHELFWISE_MODEL_VERSIONS, else the latest; None when that is the zero-shot version 1 or an
    int8 copy of it (``shelfwise quantize``)."""
    from services.common.config import parse_versions
    from services.common.inference import find_model

    pinned = parse_versions(os.environ.get("SHELFWISE_MODEL_VERSIONS", "")).get("text_encoder_multilingual")
    found = find_model(repository, "text_encoder_multilingual", pinned)
    return found if found is not None and trained_from(found.path.parent) >= 2 else None


def trained_from(version_folder: Path) -> int:
    """The version whose weights an exported version holds: its own number, or for an int8
    version the number it was quantized from (metadata.json's quantization.from_version)."""
    metadata_path = version_folder / "metadata.json"
    metadata = json.loads(metadata_path.read_text()) if metadata_path.is_file() else {}
    return int(metadata.get("quantization", {}).get("from_version", version_folder.name))


def default_pipelines(repository: Path) -> list[str]:
    return [p for p in PIPELINES if p != "dense-finetuned" or finetuned_encoder(repository) is not None]


async def run_command(args) -> int:
    try:
        evaluation = Evaluation(
            catalog=args.catalog,
            query_sets=[read_queries(path) for path in args.queries],
            qrels=read_qrels(args.qrels),
            pipelines=list(dict.fromkeys(args.pipeline or default_pipelines(args.model_repository))),
            model_repository=args.model_repository,
            cache=args.cache,
        )
        report = await evaluation.run()
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_table(report))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    if args.plot:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        plot(report, args.plot)
    if args.runs:
        write_runs(evaluation.rankings, args.runs)
    return 0


def write_runs(rankings: dict, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for (pipeline, query_set), per_query in rankings.items():
        with (folder / f"{query_set}.{pipeline}.run").open("w") as handle:
            for qid, ranking in per_query.items():
                for rank, (doc_id, score) in enumerate(ranking, start=1):
                    handle.write(f"{qid} Q0 {doc_id} {rank} {score:.6f} {pipeline}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shelfwise eval search", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run_until_stopped(run_command(parser.parse_args(argv)))

