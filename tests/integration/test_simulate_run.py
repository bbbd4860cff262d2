"""A tiny simulated A/B test end to end: `shelfwise simulate` on a 24-product Instacart-format
catalogue written by the test starts the five services over its own PostgreSQL, drives
gateway.Search and gateway.Track for a few dozen shoppers, and reports both arms, labelled as a
simulation with its assumptions."""

from __future__ import annotations

import json

from tests.unit.test_simulator import write_instacart


def test_a_tiny_simulated_ab_test_runs_end_to_end_and_reports_both_arms(tmp_path, model_repository, capsys):
    from services.cli.main import main

    tmp_path.chmod(0o755)  # the embedded PostgreSQL runs as its own system user
    data = write_instacart(tmp_path / "data")
    out = tmp_path / "report.json"
    code = main([
        "simulate", "--shoppers", "24", "--arms", "bm25,full", "--seed", "5", "--experiment", "tiny",
        "--data-dir", str(data), "--state-dir", str(tmp_path / "state"), "--model-repository", str(model_repository),
        "--intent-aisles", "all", "--language-mix", "en:0.6,zh:0.4", "--samples", "200", "--quiet",
        "--out", str(out), "--plot", str(tmp_path / "plot.png"),
    ])
    printed = capsys.readouterr().out
    assert code == 0
    assert "SIMULATION" in printed and "assumptions:" in printed and "SYNTHETIC" in printed
    result = json.loads(out.read_text())
    assert result["simulation"] is True and result["assumptions"]
    report = result["report"]
    arms = {arm["arm"]: arm for arm in report["arms"]}
    assert set(arms) == {"bm25", "full"} and report["control"] == "bm25"
    assert sum(arm["searches"] for arm in arms.values()) == result["periods"]["test"]["searches"]
    assert arms["full"]["clicks"] > 0 and "lift_vs_control" in arms["full"]
    for arm in arms.values():
        for interval in arm["metrics"].values():
            assert interval["low"] <= interval["value"] <= interval["high"]
    assert (tmp_path / "plot.png").stat().st_size > 1000
