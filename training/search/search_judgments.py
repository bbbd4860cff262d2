"""Judged queries for the search evaluations: query files (id, text, optional language), TREC
qrels, and scoring rankings against them (NDCG@10, Recall@100, MRR@10 per query, through
ir_measures)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# A ranking: (product id, score) pairs, best first.
Ranking = list[tuple[str, float]]
DEPTH = 100


MEASURES = ("nDCG@10", "R@100", "RR@10")


MEASURE_LABELS = {"nDCG@10": "NDCG@10", "R@100": "Recall@100", "RR@10": "MRR@10"}


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
