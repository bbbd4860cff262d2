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
import asyncio
import hashlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from services.common.config import model_repository, shared_data_dir
from training.stats import mean_interval, paired_difference_interval

DEPTH = 100
BOOTSTRAP_SAMPLES = 10_000
BOOTSTRAP_SEED = 7
MEASURES = ("nDCG@10", "R@100", "RR@10")
MEASURE_LABELS = {"nDCG@10": "NDCG@10", "R@100": "Recall@100", "RR@10": "MRR@10"}
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

Ranking = list[tuple[str, float]]


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


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class QuerySet:
    name: str
    queries: dict[str, str]
    languages: dict[str, str] = field(default_factory=dict)  # qid -> language, when the file says


def read_queries(path: Path) -> QuerySet:
    """``qid<TAB>query`` per line, optionally ``<TAB>language`` (else it is detected); blank
    lines skipped; a bad line is an error naming it."""
    queries: dict[str, str] = {}
    languages: dict[str, str] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) not in (2, 3) or not cells[0].strip() or not cells[1].strip():
            raise ValueError(f"{path}:{number}: expected 'qid<TAB>query' (optionally '<TAB>language')")
        qid = cells[0].strip()
        if qid in queries:
            raise ValueError(f"{path}:{number}: duplicate query id {qid!r}")
        queries[qid] = cells[1].strip()
        if len(cells) == 3 and cells[2].strip():
            languages[qid] = cells[2].strip()
    if not queries:
        raise ValueError(f"{path}: no queries")
    name = Path(path).name.removesuffix(".tsv").removesuffix(".queries")
    return QuerySet(name, queries, languages)


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """TREC qrels ``qid iteration docid grade`` (whitespace separated)."""
    qrels: dict[str, dict[str, int]] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 4:
            raise ValueError(f"{path}:{number}: expected 'qid 0 docid grade'")
        try:
            grade = int(parts[3])
        except ValueError:
            raise ValueError(f"{path}:{number}: grade must be an integer, got {parts[3]!r}") from None
        qrels.setdefault(parts[0], {})[parts[2]] = grade
    if not qrels:
        raise ValueError(f"{path}: no judgments")
    return qrels


# ------------------------------------------------------------------------ pipelines


class Pipeline:
    """Returns, for each query text, up to DEPTH (product id, score) best first."""

    name: str

    async def search(self, texts: Sequence[str]) -> list[Ranking]:
        raise NotImplementedError

    async def close(self) -> None:
        return None


class LexicalPipeline(Pipeline):
    name = "bm25"

    def __init__(self, products):
        from services.retrieval.lexical import LexicalIndex

        self._index = LexicalIndex()
        self._index.upsert(products)

    async def search(self, texts):
        return [self._index.search(text, DEPTH)[0] for text in texts]


class Bm25sPipeline(Pipeline):
    name = "bm25s"

    def __init__(self, products):
        import bm25s
        import Stemmer

        self._stemmer = Stemmer.Stemmer("english")
        self._ids = [p.id for p in products]
        corpus = [" ".join(part for part in (p.title, p.brand, p.category, p.description) if part) for p in products]
        self._retriever = bm25s.BM25()
        self._retriever.index(bm25s.tokenize(corpus, stopwords="en", stemmer=self._stemmer, show_progress=False),
                              show_progress=False)

    async def search(self, texts):
        import bm25s

        results = []
        for text in texts:
            tokens = bm25s.tokenize([text], stopwords="en", stemmer=self._stemmer, show_progress=False)
            if not tokens.vocab:
                results.append([])
                continue
            k = min(DEPTH, len(self._ids))
            documents, scores = self._retriever.retrieve(tokens, k=k, show_progress=False, n_threads=1)
            results.append([(self._ids[d], float(s)) for d, s in zip(documents[0], scores[0]) if s > 0])
        return results


class DensePipeline(Pipeline):
    def __init__(self, name: str, encoder, vectors: np.ndarray, ids: list[str]):
        self.name = name
        self._encoder = encoder
        self._vectors = vectors
        self._ids = ids

    async def search(self, texts):
        queries = await self._encoder.encode(list(texts), kind="query", timeout=600)
        scores = queries @ self._vectors.T
        results = []
        for row in scores:
            top = np.argpartition(-row, min(DEPTH, len(row) - 1))[:DEPTH]
            top = top[np.argsort(-row[top])]
            results.append([(self._ids[i], float(row[i])) for i in top])
        return results


class HybridPipeline(Pipeline):
    name = "hybrid"

    def __init__(self, lexical: Pipeline, english: Pipeline, multilingual: Pipeline,
                 fuse: Callable[[Ranking, Ranking, Ranking], Ranking]):
        self._lexical, self._english, self._multilingual, self._fuse = lexical, english, multilingual, fuse

    async def search(self, texts):
        lexical = await self._lexical.search(texts)
        english = await self._english.search(texts)
        multilingual = await self._multilingual.search(texts)
        return [self._fuse(l, e, m)[:DEPTH] for l, e, m in zip(lexical, english, multilingual)]


class FullPipeline(Pipeline):
    """The whole system on free ports; queries through gateway.Search."""

    name = "full"

    def __init__(self, system, postgres, scratch):
        self._system, self._postgres, self._scratch = system, postgres, scratch
        # Stage -> number of responses that bypassed it; reported, since a degraded stage
        # would otherwise silently lower (or flatter) the figures.
        self.degraded: dict[str, int] = {}
        self.encoder_model = system.environ.get("SHELFWISE_TEXT_ENCODER", "")

    @classmethod
    async def start(cls, catalog: Path, products, model_repository: Path, cache: Path) -> "FullPipeline":
        from services.local.system import EmbeddedPostgres, LocalSystem, free_port_environment
        from services.local.catalog_import import import_products

        # One PostgreSQL per catalogue, kept between runs: products and their embeddings (cached
        # per encoder version) survive, so the next run does not re-encode the catalogue.
        data_dir = cache / f"system-{_file_digest(catalog)}"
        postgres = EmbeddedPostgres(data_dir / "postgres")
        url = postgres.start()
        scratch = tempfile.TemporaryDirectory(prefix="shelfwise-eval-")
        env = free_port_environment()
        # Query understanding reloads the catalogue vocabulary on this period; the eval waits
        # one period after the import so every query sees the whole catalogue.
        env.setdefault("SHELFWISE_VOCABULARY_REFRESH_SECONDS", "2")
        system = LocalSystem(url, model_repository.resolve(), Path(scratch.name) / "logs", environ=env)
        try:
            await system.start(timeout=600)
            started = time.monotonic()
            changed = await cls._changed_products(products, system.address("retrieval"))
            if changed:
                inserted, updated = await import_products(changed, system.address("retrieval"), batch_size=500)
                print(f"  full: catalogue imported ({inserted} new, {updated} updated) in "
                      f"{time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)
            await asyncio.sleep(float(env["SHELFWISE_VOCABULARY_REFRESH_SECONDS"]) * 2 + 1)
        except BaseException:
            system.stop()
            postgres.stop()
            scratch.cleanup()
            raise
        return cls(system, postgres, scratch)

    @staticmethod
    async def _changed_products(products, retrieval_address: str) -> list:
        """Catalogue products that retrieval does not hold as they are. Upserts re-encode
        their products, so a second run against the kept database skips the unchanged ones."""
        from shelfwise.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc

        from services.common.channels import create_channel
        from services.retrieval.catalog import chunked
        from services.retrieval.servicer import product_to_pb

        changed = []
        async with create_channel(retrieval_address, 64 * 1024 * 1024) as channel:
            stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
            for batch in chunked(products, 1000):
                response = await stub.GetProducts(
                    retrieval_pb2.GetProductsRequest(product_ids=[p.id for p in batch]), timeout=60
                )
                held = {message.id: message for message in response.products}
                changed += [p for p in batch if held.get(p.id) != product_to_pb(p)]
        return changed

    def address(self, service: str) -> str:
        return self._system.address(service)

    @property
    def encoders(self) -> list[str]:
        """The text encoders retrieval embeds with (the English space's first)."""
        from services.common.config import multilingual_encoder_model, text_encoder_model

        return [name for name in (text_encoder_model(self._system.service_environment()),
                                  multilingual_encoder_model(self._system.service_environment())) if name]

    async def search(self, texts):
        from shelfwise.gateway.v1 import gateway_pb2, gateway_pb2_grpc

        from services.common.channels import create_channel

        results = []
        async with create_channel(self._system.address("gateway")) as channel:
            stub = gateway_pb2_grpc.GatewayServiceStub(channel)
            for text in texts:
                response = await stub.Search(
                    gateway_pb2.SearchRequest(query=text, page_size=DEPTH, user_id="eval", session_id="eval"),
                    timeout=30,
                )
                results.append([(item.product.id, float(item.score)) for item in response.results])
                for stage in response.degraded_stages:
                    self.degraded[stage] = self.degraded.get(stage, 0) + 1
        return results

    async def close(self):
        self._system.stop()
        self._postgres.stop()
        self._scratch.cleanup()


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def model_fingerprint(model_file: Path) -> str:
    """Identifies an exported model file without hashing hundreds of MB: path, size, mtime."""
    stat = Path(model_file).stat()
    return f"{Path(model_file).resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


async def encode_catalog(encoder, products, cache: Path, fingerprint: str) -> np.ndarray:
    """Passage vectors of every product, cached per model file and product texts."""
    texts = [p.embedding_text() for p in products]
    key = hashlib.sha256()
    key.update(encoder.version.encode())
    key.update(fingerprint.encode())
    for text in texts:
        key.update(text.encode("utf-8"))
        key.update(b"\x00")
    path = cache / f"vectors-{key.hexdigest()[:24]}.npy"
    if path.is_file():
        return np.load(path)
    from tqdm import tqdm

    vectors = []
    chunk = 512
    with tqdm(total=len(texts), unit="product", desc=f"encode {encoder.version}", file=sys.stderr) as bar:
        for start in range(0, len(texts), chunk):
            vectors.append(await encoder.encode(texts[start : start + chunk], kind="passage", timeout=600))
            bar.update(len(texts[start : start + chunk]))
    stacked = np.concatenate(vectors).astype(np.float32)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, stacked)
    return stacked


# ------------------------------------------------------------------------ metrics


@dataclass
class Scores:
    """Per-query values of every measure for one (pipeline, query set)."""

    per_query: dict[str, dict[str, float]] = field(default_factory=dict)  # measure -> qid -> value


def evaluate_run(qrels: dict[str, dict[str, int]], rankings: dict[str, Ranking]) -> Scores:
    import ir_measures

    measures = [ir_measures.parse_measure(m) for m in MEASURES]
    judged = [qid for qid in rankings if qid in qrels]
    run = []
    for qid in judged:
        # Scores from the rank, so ties in a pipeline's own scores cannot reorder its list.
        for position, doc_id in enumerate(dict.fromkeys(doc_id for doc_id, _ in rankings[qid])):
            run.append(ir_measures.ScoredDoc(qid, doc_id, float(2 * DEPTH - position)))
    qrel_rows = [ir_measures.Qrel(qid, doc_id, grade) for qid in judged for doc_id, grade in qrels[qid].items()]
    # A query with no results is a zero on every measure, not a missing row.
    values = {str(m): {qid: 0.0 for qid in judged} for m in measures}
    for metric in ir_measures.iter_calc(measures, qrel_rows, run):
        values[str(metric.measure)][metric.query_id] = float(metric.value)
    return Scores(values)


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


# ------------------------------------------------------------ Instacart and tuning


def add_benchmark_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=shared_data_dir(),
                        help="folder holding instacart/ (default: $SHELFWISE_DATA_DIR or ../shared/data)")
    parser.add_argument("--benchmark-dir", type=Path, default=Path("build") / "benchmarks" / "instacart",
                        help="where the built catalogue, queries and qrels go (not committed: data licence)")
    parser.add_argument("--model-repository", type=Path, default=model_repository())
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)


def build_benchmark(args):
    from training.search import instacart

    files = instacart.build(args.data_dir, args.benchmark_dir)
    counts = instacart.split_summary(args.data_dir)
    print(f"Instacart benchmark in {files.folder}: aisles with queries per split "
          + ", ".join(f"{split} {count}" for split, count in counts.items()), flush=True)
    return files


async def instacart_command(args) -> int:
    """Build the benchmark, then evaluate the split's en, zh and misspelled query sets."""
    from training.search import instacart

    try:
        files = build_benchmark(args)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    args.catalog = files.catalog
    args.queries = [files.queries(args.split, name) for name in instacart.QUERY_SETS]
    args.qrels = files.qrels(args.split)
    args.out = args.out or Path("build") / "reports" / f"instacart-{args.split}.json"
    args.plot = args.plot or Path("build") / "reports" / f"instacart-{args.split}.png"
    code = await run_command(args)
    if code == 0:
        print(f"report: {args.out}  plot: {args.plot}")
    return code


async def tune_fusion_command(args) -> int:
    """Grid-search the fusion settings of retrieval's three lists on the dev split (never the
    test split). Fusion picks the candidates ranking orders, and their order when ranking is
    down; the query sets are read without query understanding (no rendering of Chinese)."""
    from services.retrieval.fusion import Fusion

    files = build_benchmark(args)
    evaluation = Evaluation(
        catalog=files.catalog,
        query_sets=[read_queries(files.queries("dev", name)) for name in ("en", "zh")],
        qrels=read_qrels(files.qrels("dev")),
        pipelines=["bm25", *HYBRID_DENSE],
        model_repository=args.model_repository,
        cache=args.cache,
    )
    await evaluation.run()
    grid = []
    for k in (5, 10, 20, 40, 60, 100):
        for weight in (0.0, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5):
            for multilingual in (0.25, 0.5, 1.0):
                fusion = Fusion(k=k, lexical_weight=weight, multilingual_weight=multilingual)
                values = []
                for query_set in evaluation.query_sets:
                    lists = [evaluation.rankings[(name, query_set.name)] for name in ("bm25", *HYBRID_DENSE)]
                    fused = {qid: fusion.fuse_rankings(*(ranking[qid] for ranking in lists))[:DEPTH] for qid in lists[0]}
                    values += list(evaluate_run(evaluation.qrels, fused).per_query["nDCG@10"].values())
                grid.append((float(np.mean(values)), k, weight, multilingual))
    grid.sort(reverse=True)
    print(f"dev split, bm25 + {' + '.join(HYBRID_DENSE)}, NDCG@10 over {len(values)} en+zh queries (best first):")
    for score, k, weight, multilingual in grid[:10]:
        print(f"  k={k:<4g} lexical_weight={weight:<5g} multilingual_weight={multilingual:<5g} NDCG@10={score:.4f}")
    default = next(score for score, k, weight, multilingual in grid if (k, weight, multilingual) == (60, 1.0, 1.0))
    print(f"  (plain RRF k=60, weights 1/1/1: {default:.4f})")
    best = grid[0]
    print(f"best: SHELFWISE_FUSION_K={best[1]:g} SHELFWISE_FUSION_LEXICAL_WEIGHT={best[2]:g} "
          f"SHELFWISE_FUSION_MULTILINGUAL_WEIGHT={best[3]:g}")
    return 0
