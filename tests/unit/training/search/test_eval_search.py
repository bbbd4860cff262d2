"""The relevance evaluation's parts: input parsing, metrics over runs, intervals, fusion."""

from __future__ import annotations

import argparse

import pytest

from services.retrieval.fusion import REFERENCE_MAX, Fusion
from training.search.eval_search import format_table, pipeline_name, trained_from
from training.search.search_judgments import MEASURE_LABELS, evaluate_run, read_qrels, read_queries


def test_queries_file_is_qid_tab_query_and_names_bad_lines(tmp_path):
    good = tmp_path / "dev.en.queries.tsv"
    good.write_text("q1\tfresh fruits\n\nq2\t新鲜水果\n", encoding="utf-8")
    query_set = read_queries(good)
    assert query_set.name == "dev.en"
    assert query_set.queries == {"q1": "fresh fruits", "q2": "新鲜水果"}

    bad = tmp_path / "bad.tsv"
    bad.write_text("q1 fresh fruits\n", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.tsv:1: expected 'qid<TAB>query'"):
        read_queries(bad)
    duplicate = tmp_path / "dup.tsv"
    duplicate.write_text("q1\ta\nq1\tb\n", encoding="utf-8")
    with pytest.raises(ValueError, match="duplicate query id 'q1'"):
        read_queries(duplicate)


def test_qrels_are_trec_format_with_integer_grades(tmp_path):
    qrels = tmp_path / "x.qrels"
    qrels.write_text("q1 0 d1 1\nq1 0 d2 2\nq2 0 d3 1\n")
    assert read_qrels(qrels) == {"q1": {"d1": 1, "d2": 2}, "q2": {"d3": 1}}
    qrels.write_text("q1 0 d1 relevant\n")
    with pytest.raises(ValueError, match="grade must be an integer"):
        read_qrels(qrels)


def test_metrics_reward_relevant_documents_at_the_top_and_count_empty_results_as_zero():
    qrels = {"q1": {"d1": 1, "d2": 1}, "q2": {"d3": 1}, "q3": {"d4": 1}}
    rankings = {
        "q1": [("d1", 9.0), ("d2", 8.0), ("x", 7.0)],  # perfect
        "q2": [("x", 9.0), ("d3", 1.0)],  # relevant at rank 2
        "q3": [],  # nothing found
    }
    scores = evaluate_run(qrels, rankings).per_query
    assert scores["nDCG@10"]["q1"] == pytest.approx(1.0)
    assert scores["RR@10"]["q2"] == pytest.approx(0.5)
    assert scores["nDCG@10"]["q2"] == pytest.approx(1 / 1.5849625, rel=1e-4)  # 1/log2(3)
    assert scores["nDCG@10"]["q3"] == 0.0 and scores["R@100"]["q3"] == 0.0


def test_fusion_adds_weighted_reciprocal_ranks_and_a_zero_weight_ignores_that_list():
    lexical = [("a", 12.0), ("b", 7.0)]
    dense = [("b", 0.9), ("c", 0.8)]
    fused = Fusion(k=60, lexical_weight=1.0).fuse_rankings(lexical, dense)
    assert [doc for doc, _ in fused] == ["b", "a", "c"]  # b is in both lists
    assert dict(fused)["b"] == pytest.approx(1 / 62 + 1 / 61)
    dense_only = Fusion(k=60, lexical_weight=0.0).fuse_rankings(lexical, dense)
    assert [doc for doc, _ in dense_only][:2] == ["b", "c"]


def test_fusion_settings_come_from_the_environment():
    fusion = Fusion.from_env({"SHELFWISE_FUSION_K": "20", "SHELFWISE_FUSION_LEXICAL_WEIGHT": "0.5"})
    assert (fusion.k, fusion.lexical_weight) == (20.0, 0.5)


def test_fused_scores_reach_ranking_on_one_scale_whatever_the_fusion_settings():
    from services.ranking.features import RRF_MAX
    from services.retrieval.fusion import REFERENCE_MAX

    assert RRF_MAX == REFERENCE_MAX
    for fusion in (Fusion(), Fusion(k=10, lexical_weight=0.25), Fusion(k=100, lexical_weight=2.0)):
        assert fusion.scaled(1, 1) == pytest.approx(REFERENCE_MAX)
        assert fusion.scaled(3, 0) < fusion.scaled(1, 0) < fusion.scaled(1, 1)


def test_a_pipeline_is_a_known_name_or_a_dense_pipeline_pinned_to_a_version():
    assert pipeline_name("hybrid") == "hybrid"
    assert pipeline_name("dense-multilingual@2") == "dense-multilingual@2"
    assert pipeline_name("dense-zeroshot@1") == "dense-zeroshot@1"
    for bad in ("bm25@2", "hybrid@1", "dense-multilingual@0", "dense-multilingual@x", "dense-multilingual@", "bert"):
        with pytest.raises(argparse.ArgumentTypeError, match="NAME@VERSION"):
            pipeline_name(bad)


def test_a_version_holds_its_own_weights_unless_it_is_an_int8_copy(tmp_path):
    (tmp_path / "3").mkdir()
    (tmp_path / "3" / "metadata.json").write_text('{"version": 3}')
    assert trained_from(tmp_path / "3") == 3
    (tmp_path / "4").mkdir()
    (tmp_path / "4" / "metadata.json").write_text('{"version": 4, "quantization": {"from_version": 3}}')
    assert trained_from(tmp_path / "4") == 3
    (tmp_path / "5").mkdir()
    assert trained_from(tmp_path / "5") == 5


def test_the_table_keeps_its_columns_aligned_for_long_pipeline_and_query_set_names():
    measure = {"mean": 0.5, "ci95": [0.4, 0.6]}
    rows = [
        {"query_set": query_set, "language": "all", "pipeline": pipeline, "queries": 86,
         **{label: measure for label in MEASURE_LABELS.values()}}
        for query_set in ("test.en", "test.en-misspelled") for pipeline in ("bm25", "dense-multilingual@12")
    ]
    lines = format_table({"rows": rows, "overall": [], "pipelines": {}}).splitlines()
    table = [line for line in lines[2:] if line and not line.startswith("mean")]
    assert len(table) == 4
    # Every row puts its figures where the header puts their labels.
    assert len({line.index(" 86 ") for line in table}) == 1
    assert len({len(line) for line in table + [lines[0]]}) == 1


def test_three_lists_fuse_with_a_weight_each_as_retrieval_fuses_its_spaces():
    lexical, english, multilingual = [("a", 9.0)], [("b", 0.9), ("a", 0.5)], [("c", 0.8), ("b", 0.7)]
    fusion = Fusion(k=60, lexical_weight=0.5, dense_weight=1.0, multilingual_weight=1.0)
    fused = dict(fusion.fuse_rankings(lexical, english, multilingual))
    assert fused == pytest.approx({"a": 0.5 / 61 + 1 / 62, "b": 1 / 61 + 1 / 62, "c": 1 / 61})
    ranks = fusion.scaled_ranks([1, 0, 0], [2, 1, 0], [0, 2, 1])
    assert ranks.tolist() == pytest.approx([fused[d] * _scale(fusion) for d in "abc"])
    assert fusion.scaled_ranks([1], [1], [1])[0] == pytest.approx(REFERENCE_MAX)


def _scale(fusion):
    """The factor scaled_ranks multiplies fused scores by, written out."""
    return REFERENCE_MAX / ((fusion.lexical_weight + fusion.dense_weight + fusion.multilingual_weight) / (fusion.k + 1))


def test_the_paired_difference_resamples_queries_with_both_pipelines_values_together(tmp_path):
    from training.search.eval_search import Evaluation
    from training.search.search_judgments import QuerySet, Scores

    queries = QuerySet("dev.en", {f"q{i}": "x" for i in range(40)})
    evaluation = Evaluation(tmp_path, [queries], {}, ["bm25", "full"], tmp_path, tmp_path)
    base = {f"q{i}": i / 40 for i in range(40)}  # widely spread per query...
    evaluation.results = {
        ("bm25", "dev.en"): Scores({"nDCG@10": base}),
        ("full", "dev.en"): Scores({"nDCG@10": {q: v + 0.05 for q, v in base.items()}}),  # ...a steady +0.05
    }
    [row] = evaluation.paired_differences()
    assert (row["baseline"], row["queries"]) == ("bm25", 40)
    assert row["difference"]["mean"] == pytest.approx(0.05)
    # Paired, the interval is as tight as the differences are steady (unpaired, it would span
    # the spread of the values themselves and cross zero).
    assert row["difference"]["ci95"] == pytest.approx([0.05, 0.05])
    report = {"rows": [], "overall": [], "pipelines": {}, "paired": [row]}
    assert "full - bm25 +0.050 [+0.050, +0.050]" in format_table(report)
