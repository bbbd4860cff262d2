"""A tiny simulated A/B test end to end: `shelfwise simulate` on a 24-product Instacart-format
catalogue written by the test starts the five services over its own PostgreSQL, drives
gateway.Search and gateway.Track for a few dozen warm-up shoppers, trains the CTR head on their
events, then runs the test period (whose full arm serves that head) and reports both arms,
labelled as a simulation with its assumptions."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.instacart_fixture import write_instacart


def linked_repository(source: Path, target: Path) -> Path:
    """A model repository whose versions link to `source`'s, so that a CTR head trained here is
    written next to them and never into the shared repository."""
    for model in source.iterdir():
        if not model.is_dir():
            continue
        (target / model.name).mkdir(parents=True)
        for child in model.iterdir():
            if child.is_dir() and child.name.isdigit():
                (target / model.name / child.name).symlink_to(child.resolve())
            elif child.name == "config.pbtxt":
                (target / model.name / child.name).write_bytes(child.read_bytes())
    return target


def test_a_tiny_simulated_ab_test_with_a_warm_up_trained_head_runs_end_to_end(tmp_path, model_repository, capsys):
    from services.cli.main import main
    from services.common.inference import find_model

    tmp_path.chmod(0o755)  # the embedded PostgreSQL runs as its own system user
    data = write_instacart(tmp_path / "data")
    repository = linked_repository(model_repository, tmp_path / "repository")
    before = find_model(repository, "ctr_head").version
    out = tmp_path / "report.json"
    argv = [
        "simulate", "--warmup-shoppers", "30", "--train-ctr", "--shoppers", "24", "--arms", "bm25,full",
        "--seed", "5", "--experiment", "tiny", "--data-dir", str(data), "--state-dir", str(tmp_path / "state"),
        "--model-repository", str(repository), "--intent-aisles", "all", "--language-mix", "en:0.6,zh:0.4",
        "--samples", "200", "--quiet", "--out", str(out), "--plot", str(tmp_path / "plot.png"),
    ]
    code = main(argv)
    printed = capsys.readouterr().out
    assert code == 0
    assert "SIMULATION" in printed and "assumptions:" in printed and "SYNTHETIC" in printed

    result = json.loads(out.read_text())
    assert result["simulation"] is True and result["assumptions"]
    trained = find_model(repository, "ctr_head")
    assert trained.version == before + 1
    assert result["periods"]["warm-up"]["ctr_head_trained"] == trained.label
    # The head trained on the warm-up's events adjusts the relevance ranker's order when one is deployed.
    relevance = find_model(repository, "relevance_ranker")
    served = f"{relevance.label}+{trained.label}" if relevance else trained.label
    assert result["periods"]["test"]["rankers"]["tiny/full"] == [served]
    assert result["periods"]["test"]["rankers"]["tiny/bm25"] == ["retrieval-order"]
    assert result["periods"]["warm-up"]["until"] <= result["periods"]["test"]["since"]

    report = result["report"]
    arms = {arm["arm"]: arm for arm in report["arms"]}
    assert set(arms) == {"bm25", "full"} and report["control"] == "bm25" and report["experiment"] == "tiny"
    assert sum(arm["searches"] for arm in arms.values()) == result["periods"]["test"]["searches"]
    assert arms["full"]["clicks"] > 0 and "lift_vs_control" in arms["full"]
    for arm in arms.values():
        for interval in arm["metrics"].values():
            assert interval["low"] <= interval["value"] <= interval["high"]
    assert (tmp_path / "plot.png").stat().st_size > 1000

    # The same experiment again into the same database would only log duplicates: refused.
    assert main(argv) == 2
    assert "already has searches" in capsys.readouterr().err
