"""The shopper simulator's pure parts: a world read from Instacart-format files (a small
fixture from tests/support, not the shared data), deterministic shoppers, match levels, the click
model's position bias and intent dependence, synthetic prices and the arms' configuration."""

from __future__ import annotations

import random

import pytest

from services.gateway.experiments import parse_experiments
from tests.support.instacart_fixture import write_instacart
from training.experiments.arms import experiment_config
from training.experiments.shoppers import (
    EXAMINATION,
    Audience,
    Intent,
    load_world,
    match_level,
    parse_language_mix,
    plan_shoppers,
    react,
    synthetic_price,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return load_world(write_instacart(tmp_path_factory.mktemp("data")))


def test_the_world_holds_real_format_products_orders_and_synthetic_prices(world):
    assert len(world.products) == 24 and len(world.orders) == 20
    assert world.products["1"].price == synthetic_price("1") > 0
    catalog = {p.id: p for p in world.catalog()}
    assert catalog["13"].title == "Organic Whole Milk" and catalog["13"].category == "dairy eggs"


def test_synthetic_prices_are_deterministic_and_plausible():
    prices = [synthetic_price(str(i)) for i in range(2_000)]
    assert prices == [synthetic_price(str(i)) for i in range(2_000)]
    assert all(0.5 <= p <= 60 for p in prices)
    assert 3.0 <= sorted(prices)[1_000] <= 5.0  # median about $4


def test_shoppers_are_deterministic_given_the_seed_and_differ_across_seeds(world):
    mix = parse_language_mix("en:0.5,zh:0.5")
    first = plan_shoppers(world, 30, 7, "test", Audience(mix, aisles="all"))
    assert first == plan_shoppers(world, 30, 7, "test", Audience(mix, aisles="all"))
    assert first != plan_shoppers(world, 30, 8, "test", Audience(mix, aisles="all"))
    assert {s.language for s in first} == {"en", "zh"}
    for shopper in first:
        basket = dict(world.orders)[shopper.order_id]
        for search in shopper.searches:
            assert search.query.strip()
            assert search.intent.basket == frozenset(basket)
            if search.intent.kind == "product":
                assert search.intent.product_id in basket


def test_shoppers_of_different_experiments_are_different_users(world):
    mix = parse_language_mix("en:1")
    a = plan_shoppers(world, 5, 1, "test", Audience(mix, aisles="all", experiment="exp-a"))
    b = plan_shoppers(world, 5, 1, "test", Audience(mix, aisles="all", experiment="exp-b"))
    assert [s.searches for s in a] == [s.searches for s in b]  # same seed: the same shoppers' plans
    assert not {s.user_id for s in a} & {s.user_id for s in b}


def test_warm_up_and_test_shoppers_use_disjoint_orders(world):
    mix = parse_language_mix("en:1")
    warmup = {s.order_id for s in plan_shoppers(world, 60, 1, "warmup", Audience(mix, aisles="all"))}
    test = {s.order_id for s in plan_shoppers(world, 60, 1, "test", Audience(mix, aisles="all"))}
    assert warmup and test and not warmup & test


def test_chinese_shoppers_type_chinese_aisle_queries(world):
    shoppers = plan_shoppers(world, 20, 3, "test", Audience(parse_language_mix("zh:1"), aisles="all"))
    assert all(any("\u4e00" <= ch <= "\u9fff" for ch in s.query) for shopper in shoppers for s in shopper.searches)


def test_match_levels_rank_product_over_basket_over_aisle_over_department(world):
    p = world.products
    intent = Intent("product", aisle_id=84, department_id=16, product_id="13", basket=frozenset({"13", "1", "17"}))
    assert match_level(intent, p["13"]) == "product"
    assert match_level(intent, p["1"]) == "basket"
    assert match_level(intent, p["14"]) == "aisle"
    assert match_level(intent, p["21"]) == "department"
    assert match_level(intent, p["8"]) == "none"
    assert match_level(intent, None) == "none"


def test_clicks_fall_with_position_and_depend_on_the_match(world):
    # The intended product at every position of a page of copies: clicks per position follow
    # the examination curve; a page of unrelated products gets far fewer clicks.
    intent = Intent("product", 84, 16, "13", frozenset({"13"}))
    rng = random.Random(0)
    clicks = [0] * 10
    for _ in range(3_000):
        for action in react(intent, ["13"] * 10, world, rng):
            if action.kind == "click":
                clicks[action.position - 1] += 1
    assert clicks[0] > clicks[4] > clicks[9]
    assert clicks[0] / 3_000 == pytest.approx(EXAMINATION[0] * 0.85, abs=0.03)
    unrelated = sum(a.kind == "click" for _ in range(3_000) for a in react(intent, ["8"] * 10, world, rng))
    assert unrelated < sum(clicks) / 10


def test_purchases_follow_add_to_carts_which_follow_clicks_with_the_price_as_value(world):
    intent = Intent("aisle", 84, 16, "", frozenset())
    rng = random.Random(1)
    for _ in range(500):
        actions = react(intent, ["13", "14", "15", "16", "8"], world, rng)
        for n, action in enumerate(actions):
            if action.kind == "add_to_cart":
                assert actions[n - 1].kind == "click" and actions[n - 1].product_id == action.product_id
            if action.kind == "purchase":
                assert actions[n - 1].kind == "add_to_cart"
                assert action.value == pytest.approx(world.products[action.product_id].price * action.quantity)


def test_arm_presets_make_a_valid_experiment_with_the_first_arm_as_control():
    experiments = parse_experiments(experiment_config("sim", ["bm25", "full"]))
    experiment = experiments.get("sim")
    assert experiment.control == "bm25"
    bm25 = experiment.arm("bm25").policy
    assert (bm25.retrieval, bm25.ranking, bm25.query_understanding) == ("lexical", "retrieval", False)
    with pytest.raises(ValueError, match="--arms"):
        experiment_config("sim", ["bm25", "magic"])
    with pytest.raises(ValueError, match="--arms"):
        experiment_config("sim", ["full"])


def test_full_at_a_version_pins_that_ctr_head_to_compare_heads():
    experiment = parse_experiments(experiment_config("heads", ["full@1", "full@2"])).get("heads")
    assert [arm.name for arm in experiment.arms] == ["full-ctr1", "full-ctr2"] and experiment.control == "full-ctr1"
    assert [arm.policy.ctr_head_version for arm in experiment.arms] == [1, 2]
    with pytest.raises(ValueError, match="--arms"):
        experiment_config("heads", ["bm25@2", "full"])  # bm25 keeps retrieval order: no head to pin


def test_a_bad_language_mix_names_the_option():
    with pytest.raises(ValueError, match="--language-mix"):
        parse_language_mix("fr:1")
    assert parse_language_mix("en:3,zh:1") == {"en": 0.75, "zh": 0.25}


def test_interleaving_makes_an_interleaved_experiment_of_exactly_two_arms():
    experiment = parse_experiments(experiment_config("il", ["bm25", "full"], interleaving=True)).get("il")
    assert experiment.interleaving
    with pytest.raises(ValueError, match="--interleaving"):
        experiment_config("il", ["bm25", "dense", "full"], interleaving=True)


# --- --compare learning ---------------------------------------------------------------------------


def test_the_learning_comparison_has_a_fair_control_and_one_learned_part_per_arm():
    from training.experiments.learning_comparison import TEST_ARMS, comparison_config

    config = comparison_config("cmp", TEST_ARMS, ctr_head_version=4)
    experiment = parse_experiments(config).experiments[0]
    assert experiment.control == "control"
    policies = {arm.name: arm.policy for arm in experiment.arms}
    assert policies["bm25"].ranking == "retrieval" and not policies["bm25"].query_understanding
    assert policies["control"].excluded == {"popularity", "personalization", "ctr_head"}
    assert policies["control"].query_understanding and policies["control"].retrieval == "hybrid"
    for arm, part in (("ctr-head", "ctr_head"), ("popularity", "popularity"), ("personalization", "personalization")):
        assert policies[arm].excluded == {"popularity", "personalization", "ctr_head"} - {part}
    assert policies["learned-all"].excluded == frozenset()
    # The head trained on the warm-up is pinned wherever it is used, and nowhere else.
    assert {name for name, policy in policies.items() if policy.ctr_head_version == 4} == {"ctr-head", "learned-all"}


def test_warm_up_and_test_aisles_are_disjoint_benchmark_splits(world):
    from training.search.instacart import split_of
    from training.experiments.learning_comparison import COMPARISON_AISLES
    from training.experiments.shoppers import intent_aisles

    for test, warmup in COMPARISON_AISLES.items():
        assert not intent_aisles(world, test) & intent_aisles(world, warmup)
        assert {split_of(a) for a in intent_aisles(world, test)} <= {test}
    assert intent_aisles(world, "train-dev") == intent_aisles(world, "train") | intent_aisles(world, "dev")


def test_lift_rows_have_the_shape_a_script_reads():
    from training.experiments.learning_comparison import language_of, lift_rows

    interval = {"value": 0.1, "low": -0.05, "high": 0.2}
    report = {"control": "control", "arms": [
        {"arm": "control"}, {"arm": "bm25", "lift_vs_control": {"ctr": {"relative": interval}, "cvr": {"relative": interval}}},
        {"arm": "learned-all", "lift_vs_control": {m: {"relative": interval} for m in ("ctr", "cvr", "search_ctr")}},
    ]}
    rows = lift_rows(report, "en", "pooled")
    assert rows == [
        {"arm": "learned-all", "control": "control", "language": "en", "metric": metric, "lift": 0.1,
         "ci_low": -0.05, "ci_high": 0.2, "seeds": "pooled"}
        for metric in ("ctr", "cvr")
    ]  # the reference arm is not a treatment
    assert language_of("新鲜水果") == "zh" and language_of("hass avocado") == "en"


def test_no_purchase_stops_the_reading_when_the_shopper_model_says_so(world):
    intent = Intent("aisle", 24, 4)
    page = ["1", "2", "3", "4", "5", "6"]
    stopped = [len(react(intent, page, world, random.Random(seed))) for seed in range(400)]
    reading = [len(react(intent, page, world, random.Random(seed), stop_after_purchase=0.0)) for seed in range(400)]
    assert sum(reading) > sum(stopped)


def test_the_scratch_repository_links_the_shops_models_and_keeps_trained_heads_apart(tmp_path):
    from training.experiments.learning_comparison import scratch_repository

    source = tmp_path / "repo"
    (source / "ctr_head" / "1").mkdir(parents=True)
    (source / "ctr_head" / "1" / "model.onnx").write_bytes(b"onnx")
    (source / "ctr_head" / "config.pbtxt").write_text('name: "ctr_head"')
    scratch = scratch_repository(source, tmp_path / "state" / "model_repository")
    assert (scratch / "ctr_head" / "1").is_symlink() and (scratch / "ctr_head" / "1" / "model.onnx").read_bytes() == b"onnx"
    assert not (scratch / "ctr_head" / "config.pbtxt").is_symlink()
    (scratch / "ctr_head" / "2").mkdir()
    assert not (source / "ctr_head" / "2").exists()
    assert scratch_repository(source, scratch) == scratch  # a second run reuses it
