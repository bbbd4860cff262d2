"""Experiments: configuration checks, sticky and balanced assignment, team-draft interleaving and
the attribution of clicks to interleaved arms."""

from __future__ import annotations

import json
import math
import random
from collections import Counter

import pytest

from services.gateway.experiments import (
    INTERLEAVED,
    ExperimentConfigError,
    Experiments,
    credit_clicks,
    load_experiments,
    parse_experiments,
    team_draft,
)


def config(**experiment) -> dict:
    base = {
        "name": "ab",
        "arms": [
            {"name": "bm25", "retrieval": "lexical", "ranking": "retrieval", "query_understanding": False},
            {"name": "full"},
        ],
    }
    base.update(experiment)
    return {"experiments": [base]}


# --- configuration -----------------------------------------------------------------------------


def test_a_json_file_gives_arms_with_their_policies_and_defaults(tmp_path):
    path = tmp_path / "experiments.json"
    path.write_text(json.dumps(config()))
    experiment = load_experiments(path).get("ab")
    bm25, full = experiment.arms
    assert (bm25.policy.retrieval, bm25.policy.ranking, bm25.policy.query_understanding) == ("lexical", "retrieval", False)
    assert (full.policy.retrieval, full.policy.ranking, full.policy.query_understanding) == ("hybrid", "model", True)
    assert experiment.control == "bm25" and experiment.salt == "ab" and experiment.traffic == 1.0


def test_a_toml_file_reads_the_same_as_json(tmp_path):
    path = tmp_path / "experiments.toml"
    path.write_text(
        '[[experiments]]\nname = "ab"\ncontrol = "full"\n'
        '[[experiments.arms]]\nname = "bm25"\nretrieval = "lexical"\n'
        '[[experiments.arms]]\nname = "full"\nctr_head_version = 2\n'
    )
    experiment = load_experiments(path).get("ab")
    assert experiment.control == "full"
    assert experiment.arm("full").policy.ctr_head_version == 2


def test_no_file_setting_means_no_experiment():
    experiments = load_experiments("")
    assert not experiments
    assert experiments.assign("u1", "", "r1") is None


@pytest.mark.parametrize(
    "change, field",
    [
        ({"arms": [{"name": "only"}]}, "experiments[0].arms"),
        ({"arms": [{"name": "a", "ranking": "magic"}, {"name": "b"}]}, "experiments[0].arms[0].ranking"),
        ({"arms": [{"name": "a", "retrieval": "sql"}, {"name": "b"}]}, "experiments[0].arms[0].retrieval"),
        ({"arms": [{"name": "a"}, {"name": "a"}]}, "experiments[0].arms[1].name"),
        ({"arms": [{"name": "a", "weight": 0}, {"name": "b"}]}, "experiments[0].arms[0].weight"),
        ({"arms": [{"name": "a", "colour": "red"}, {"name": "b"}]}, "experiments[0].arms[0].colour"),
        ({"arms": [{"name": "a", "ranking": "formula", "ctr_head_version": 1}, {"name": "b"}]},
         "experiments[0].arms[0].ctr_head_version"),
        ({"control": "nobody"}, "experiments[0].control"),
        ({"name": "has space"}, "experiments[0].name"),
        ({"traffic": 1.5}, "experiments[0].traffic"),
        ({"interleaving": True, "arms": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}, "experiments[0].arms"),
        ({"arms": [{"name": INTERLEAVED}, {"name": "b"}]}, "experiments[0].arms[0].name"),
    ],
)
def test_a_bad_configuration_is_an_error_naming_the_field(change, field):
    with pytest.raises(ExperimentConfigError) as error:
        parse_experiments(config(**change))
    assert error.value.field == field
    assert str(error.value).startswith(field)


def test_experiments_sharing_traffic_must_not_exceed_all_of_it():
    raw = {"experiments": [config(traffic=0.6)["experiments"][0], dict(config(traffic=0.6)["experiments"][0], name="cd")]}
    with pytest.raises(ExperimentConfigError, match="traffic"):
        parse_experiments(raw)


def test_a_missing_file_names_the_setting(tmp_path):
    with pytest.raises(ExperimentConfigError, match="SHELFWISE_EXPERIMENTS"):
        load_experiments(tmp_path / "nope.json")


# --- assignment --------------------------------------------------------------------------------


def test_assignment_is_sticky_per_user_and_per_session():
    experiments = parse_experiments(config())
    for n in range(200):
        first = experiments.assign(f"user-{n}", "s", "r1")
        assert all(experiments.assign(f"user-{n}", "s", f"r{k}").arm == first.arm for k in range(2, 6))
        assert first.sticky
        by_session = experiments.assign("", f"session-{n}", "r1")
        assert experiments.assign("", f"session-{n}", "r9").arm == by_session.arm


def test_a_request_without_ids_is_assigned_per_request_and_not_sticky():
    assignment = parse_experiments(config()).assign("", "", "request-7")
    assert assignment.unit == "request:request-7" and not assignment.sticky


def test_assignment_is_balanced_within_a_binomial_bound():
    # 10,000 hashed ids into two equal arms: the count of one arm is Binomial(10000, 0.5), sd 50;
    # a fair split lies within 4 sd (p ~ 6e-5 of failing by chance). Fixed ids: no flakiness.
    experiments = parse_experiments(config())
    counts = Counter(experiments.assign(f"user-{n}", "", "r").arm.name for n in range(10_000))
    assert abs(counts["bm25"] - 5_000) <= 4 * 50


def test_weights_set_the_shares():
    raw = config(arms=[{"name": "a", "weight": 3}, {"name": "b", "weight": 1}])
    experiments = parse_experiments(raw)
    n = 10_000
    share = Counter(experiments.assign(f"u{i}", "", "r").arm.name for i in range(n))["a"] / n
    assert abs(share - 0.75) <= 4 * math.sqrt(0.75 * 0.25 / n)


def test_a_new_salt_reshuffles_the_units():
    a = parse_experiments(config())
    b = parse_experiments(config(salt="round-2"))
    same = sum(a.assign(f"u{i}", "", "r").arm.name == b.assign(f"u{i}", "", "r").arm.name for i in range(2_000))
    assert 850 <= same <= 1_150  # independent halves agree about half the time


def test_traffic_below_one_leaves_the_rest_out_of_the_experiment():
    experiments = parse_experiments(config(traffic=0.2))
    n = 10_000
    inside = sum(experiments.assign(f"u{i}", "", "r") is not None for i in range(n))
    assert abs(inside / n - 0.2) <= 4 * math.sqrt(0.2 * 0.8 / n)


def test_the_label_names_the_experiment_and_the_arm():
    experiments = parse_experiments(config())
    assignment = experiments.assign("someone", "", "r")
    assert assignment.label == f"ab/{assignment.arm.name}"
    interleaved = parse_experiments(config(interleaving=True)).assign("someone", "", "r")
    assert interleaved.interleaved and interleaved.label == "ab/interleaved"


# --- team-draft interleaving ---------------------------------------------------------------------


def test_each_arm_contributes_alternately_in_every_pair_of_picks():
    a = [f"a{i}" for i in range(20)]
    b = [f"b{i}" for i in range(20)]
    for seed in range(50):
        merged = team_draft({"A": a, "B": b}, 10, random.Random(seed))
        arms = [arm for _, arm in merged]
        for start in range(0, 10, 2):
            assert sorted(arms[start : start + 2]) == ["A", "B"]
        # Each arm's picks keep that arm's own order.
        assert [p for p, arm in merged if arm == "A"] == a[: arms.count("A")]


def test_a_product_both_arms_rank_is_shown_once_and_credited_to_its_picker():
    a = ["x", "y", "z", "w"]
    b = ["x", "z", "q", "r"]
    for seed in range(20):
        merged = team_draft({"A": a, "B": b}, 6, random.Random(seed))
        products = [p for p, _ in merged]
        assert len(products) == len(set(products)) == 6
        first_product, first_arm = merged[0]
        assert first_product == "x"
        # The other arm's first pick skips "x" (already shown) to its next best.
        second_product, second_arm = merged[1]
        assert second_arm != first_arm
        assert second_product == ("z" if second_arm == "B" else "y")


def test_when_one_arm_runs_out_the_other_fills_the_page():
    merged = team_draft({"A": ["a1"], "B": ["b1", "b2", "b3"]}, 4, random.Random(1))
    assert sorted(p for p, _ in merged) == ["a1", "b1", "b2", "b3"]
    assert [arm for p, arm in merged if p in ("b2", "b3")] == ["B", "B"]


def test_the_coin_gives_each_arm_the_first_place_about_half_the_time():
    firsts = Counter(team_draft({"A": ["a"], "B": ["b"]}, 2, random.Random(seed))[0][1] for seed in range(2_000))
    assert abs(firsts["A"] - 1_000) <= 4 * math.sqrt(2_000 * 0.25)


def test_clicks_are_credited_to_the_arm_that_contributed_each_position():
    arms = ["A", "B", "B", "A", "A", "B"]  # positions 11-16 (second page)
    credit = credit_clicks(arms, first_position=11, clicked_positions=[12, 13, 14], arms=["A", "B"])
    assert credit.clicks == {"A": 1, "B": 2} and credit.winner == "B"


def test_equal_clicks_or_none_is_a_tie_and_repeats_or_unknown_positions_do_not_count():
    arms = ["A", "B", "A", "B"]
    assert credit_clicks(arms, 1, [1, 2], ["A", "B"]).winner is None
    assert credit_clicks(arms, 1, [], ["A", "B"]).winner is None
    credit = credit_clicks(arms, 1, [1, 1, 1, 9], ["A", "B"])
    assert credit.clicks == {"A": 1, "B": 0} and credit.winner == "A"


def test_an_arm_that_is_always_preferred_wins_the_interleaved_comparison():
    # A shopper who clicks only products of list A's top 3: A must win every impression where
    # one of them is shown, whatever the coin says.
    a = ["a1", "a2", "a3", "a4", "a5"]
    b = ["b1", "b2", "b3", "b4", "b5"]
    for seed in range(30):
        merged = team_draft({"A": a, "B": b}, 6, random.Random(seed))
        clicked = [position for position, (product, _) in enumerate(merged, start=1) if product in a[:3]]
        credit = credit_clicks([arm for _, arm in merged], 1, clicked, ["A", "B"])
        assert credit.winner == "A"


def test_experiments_without_a_name_are_not_found():
    with pytest.raises(KeyError):
        Experiments().get("missing")
