"""The experiment report's numbers on a small hand-computed set of searches: per-arm ratios,
lifts over the control, bootstrap intervals over users, and interleaving wins."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.experiments.experiment_report import SearchRecord, analyse, format_report, plot, wilson_interval

# Control arm "a": user u1 searched twice, u2 once. Arm "b": u3 and u4 once each.
RECORDS = [
    SearchRecord("r1", "user:u1", "a", shown=10, clicks=1, add_to_carts=1, purchases=1, revenue=5.0),
    SearchRecord("r2", "user:u1", "a", shown=10),
    SearchRecord("r3", "user:u2", "a", shown=10, clicks=2),
    SearchRecord("r4", "user:u3", "b", shown=10, clicks=3, add_to_carts=2, purchases=2, revenue=20.0),
    SearchRecord("r5", "user:u4", "b", shown=10, clicks=1),
]


def test_per_arm_metrics_are_ratios_of_sums():
    report = analyse(RECORDS, "exp", control="a", samples=500)
    a, b = report["arms"]
    assert (a["searches"], a["units"], a["shown"], a["clicks"], a["purchases"]) == (3, 2, 30, 3, 1)
    assert a["metrics"]["ctr"]["value"] == pytest.approx(3 / 30)
    assert a["metrics"]["search_ctr"]["value"] == pytest.approx(2 / 3)
    assert a["metrics"]["add_to_cart_rate"]["value"] == pytest.approx(1 / 3)
    assert a["metrics"]["cvr"]["value"] == pytest.approx(1 / 3)
    assert a["metrics"]["revenue_per_search"]["value"] == pytest.approx(5 / 3)
    assert b["metrics"]["ctr"]["value"] == pytest.approx(4 / 20)
    assert b["metrics"]["cvr"]["value"] == pytest.approx(1.0)
    assert b["metrics"]["revenue_per_search"]["value"] == pytest.approx(10.0)


def test_the_lift_is_relative_to_the_control_arm():
    report = analyse(RECORDS, "exp", control="a", samples=500)
    lift = report["arms"][1]["lift_vs_control"]
    assert lift["cvr"]["relative"]["value"] == pytest.approx(1.0 / (1 / 3) - 1)
    assert lift["ctr"]["relative"]["value"] == pytest.approx(1.0)
    assert lift["revenue_per_search"]["absolute"]["value"] == pytest.approx(10 - 5 / 3)
    assert "lift_vs_control" not in report["arms"][0]


def test_intervals_contain_the_estimate_and_are_exact_when_every_user_is_alike():
    report = analyse(RECORDS, "exp", control="a", samples=500)
    for arm in report["arms"]:
        for interval in arm["metrics"].values():
            assert interval["low"] <= interval["value"] <= interval["high"]
    alike = [SearchRecord(f"r{i}", f"user:{i}", "a", shown=10, clicks=2, purchases=1) for i in range(20)]
    cvr = analyse(alike, "exp", samples=200)["arms"][0]["metrics"]["cvr"]
    assert cvr["low"] == cvr["high"] == cvr["value"] == 1.0


def test_intervals_resample_users_so_one_users_many_searches_count_as_one_draw():
    # Arm "a": one user with 50 purchasing searches, 49 users with one search and none. By search
    # the CVR is 0.5; resampling users, the heavy user is in or out of each replicate together,
    # so the interval is far wider than a search-level bootstrap would give.
    heavy = [SearchRecord(f"h{i}", "user:heavy", "a", shown=10, purchases=1) for i in range(50)]
    light = [SearchRecord(f"l{i}", f"user:l{i}", "a", shown=10) for i in range(49)]
    cvr = analyse(heavy + light, "exp", samples=2000)["arms"][0]["metrics"]["cvr"]
    assert cvr["value"] == pytest.approx(50 / 99)
    search_level_half_width = 1.96 * math.sqrt(0.5 * 0.5 / 99)
    assert (cvr["high"] - cvr["low"]) / 2 > 2 * search_level_half_width


def test_the_default_control_is_the_arm_named_control_else_the_first_by_name():
    renamed = [SearchRecord(r.request_id, r.unit, "control" if r.arm == "b" else r.arm, r.shown, r.clicks) for r in RECORDS]
    assert analyse(renamed, "exp", samples=100)["control"] == "control"
    assert analyse(RECORDS, "exp", samples=100)["control"] == "a"
    with pytest.raises(ValueError, match="--control"):
        analyse(RECORDS, "exp", control="zzz", samples=100)


def test_interleaved_impressions_are_won_by_the_arm_with_more_credited_clicks():
    records = [
        SearchRecord("i1", "user:x", "interleaved", 4, interleaving_arms=("A", "B", "B", "A"), clicked_positions=(2, 3)),
        SearchRecord("i2", "user:y", "interleaved", 4, interleaving_arms=("B", "A", "A", "B"), clicked_positions=(2,)),
        SearchRecord("i3", "user:z", "interleaved", 4, interleaving_arms=("A", "B", "A", "B"), clicked_positions=(1, 2)),
        SearchRecord("i4", "user:w", "interleaved", 4, first_position=5, interleaving_arms=("A", "B", "A", "B"),
                     clicked_positions=(6,)),
    ]
    summary = analyse(records, "exp")["interleaving"]
    by_arm = {a["arm"]: a for a in summary["arms"]}
    assert (summary["impressions"], summary["decided"], summary["ties"]) == (4, 3, 1)
    assert (by_arm["A"]["wins"], by_arm["B"]["wins"]) == (1, 2)
    assert by_arm["B"]["win_share"] == pytest.approx(2 / 3)
    assert (by_arm["B"]["low"], by_arm["B"]["high"]) == pytest.approx(wilson_interval(2, 3))
    assert by_arm["B"]["sign_test_p"] == pytest.approx(1.0)


def test_an_interleaved_experiment_plots_the_win_shares(tmp_path):
    records = [SearchRecord(f"i{n}", f"user:{n}", "interleaved", 2, interleaving_arms=("A", "B"),
                            clicked_positions=(1 + n % 3 // 2,)) for n in range(30)]
    report = analyse(records, "exp")
    assert report["arms"] == [] and report["interleaving"]["decided"] == 30
    plot(report, tmp_path / "il.png")
    assert (tmp_path / "il.png").stat().st_size > 1000


def test_wilson_interval_matches_the_textbook_value():
    low, high = wilson_interval(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)


def test_the_text_report_says_whether_each_lift_excludes_zero_and_the_plot_is_written(tmp_path):
    report = analyse(RECORDS, "exp", control="a", samples=200)
    text = format_report(report)
    assert "arm a" in text and "arm b" in text and "lift vs a" in text
    plot(report, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 1000
    assert np.isfinite(report["arms"][0]["metrics"]["ctr"]["value"])
