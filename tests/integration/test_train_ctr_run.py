"""`shelfwise train ctr` and `shelfwise eval ctr` on events stored through the real EventStore
in a real PostgreSQL: the reader's labels, the exported head's graph and metadata, and the
side-by-side evaluation on a later window.

The events come from ``training.ctr.ctr_synthetic`` (a known click model with strong position bias)
in 2021, a window no other test writes to, so the shared database's other traffic never enters.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import torch

from services.events.model import Impression, Interaction
from services.ranking.features import FEATURE_NAMES
from tests.support.models import require_export
from tests.support.paths import MODEL_REPOSITORY
from training.ctr import ctr_data, ctr_synthetic

T0 = datetime(2021, 3, 1, tzinfo=timezone.utc)
TRAIN_UNTIL = T0 + timedelta(days=3)
EVAL_UNTIL = T0 + timedelta(days=5)
# Reader fixture, a separate year so the synthetic traffic never overlaps it.
R0 = datetime(2021, 9, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
async def store(postgres_url):
    from services.common.database import create_pool
    from services.events.store import EventStore

    pool = await create_pool(postgres_url, min_size=1, max_size=2)
    yield EventStore(pool)
    await pool.close()


async def write(store, impressions, interactions, batch: int = 500) -> None:
    # Impressions first: the store checks that every interaction points at a stored one.
    for start in range(0, len(impressions), batch):
        await store.write(impressions[start:start + batch], [])
    for start in range(0, len(interactions), batch):
        await store.write([], interactions[start:start + batch])


async def test_reader_puts_clicks_and_purchases_on_their_rows_and_skips_impressions_without_features(store, postgres_url):
    def shown(index, product_ids, features, first_position=1, minutes=0):
        return Impression(
            event_id=f"reader-imp-{index}", request_id=f"reader-req-{index}", surface="search",
            product_ids=tuple(product_ids), first_position=first_position,
            occurred_at=R0 + timedelta(minutes=minutes), features=features,
        )

    def acted(index, kind, request, product, position, after):
        return Interaction(
            event_id=f"reader-{kind}-{index}", type=kind, request_id=f"reader-req-{request}", product_id=product,
            position=position, occurred_at=R0 + after,
        )

    impressions = [
        # Page 2 of a search: positions 11-13.
        shown(0, ["a", "b", "c"], ({"bm25": 1.0}, {}, {"dense_similarity": 0.5}), first_position=11),
        shown(1, ["a", "d"], ({"popularity": 0.25}, {"popularity": 0.75}), minutes=1),
        shown(2, ["e", "f"], (), minutes=2),  # logged without features
        shown(3, ["g"], ({"fusion": 1.0},), minutes=60 * 24 * 3),  # outside the window read below
    ]
    interactions = [
        acted(0, "click", 0, "b", 12, timedelta(seconds=30)),
        acted(1, "click", 0, "b", 12, timedelta(seconds=40)),  # a second click: still one label
        acted(2, "add_to_cart", 0, "c", 13, timedelta(minutes=1)),
        acted(3, "purchase", 0, "c", 13, timedelta(minutes=2)),  # bought without a logged click
        acted(4, "click", 1, "d", 2, timedelta(days=2)),  # after the 1-day attribution window
        acted(5, "click", 2, "f", 2, timedelta(minutes=3)),
    ]
    await write(store, impressions, interactions)

    rows = await ctr_data.read_rows(postgres_url, R0, R0 + timedelta(days=1), progress=False)

    assert rows.impressions == 2 and rows.skipped_impressions == 1
    assert rows.positions.tolist() == [11, 12, 13, 1, 2]
    assert rows.clicks.tolist() == [0, 1, 1, 0, 0]
    assert rows.purchases.tolist() == [0, 0, 1, 0, 0]
    column = {name: index for index, name in enumerate(FEATURE_NAMES)}
    assert rows.features[0, column["bm25"]] == 1.0 and rows.features[1].sum() == 0.0
    assert rows.features[4, column["popularity"]] == 0.75
    assert rows.impression.tolist() == [0, 0, 0, 1, 1]


@pytest.fixture(scope="module")
async def synthetic_events(store):
    # ~3 days of training traffic and 2 later days, one impression every 90 s; every 25th
    # impression is logged without features, as an old client would.
    events = ctr_synthetic.generate(4800, T0, step=timedelta(seconds=90), seed=11,
                                    shape=ctr_synthetic.LogShape(prefix="ctrrun", without_features_every=25))
    await write(store, events.impressions, events.interactions)
    return events


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    """A model repository with the real config and the exported prior as version 1."""
    require_export(MODEL_REPOSITORY / "ctr_head" / "1", "metadata.json")
    root = tmp_path_factory.mktemp("repository")
    shutil.copytree(MODEL_REPOSITORY / "ctr_head" / "1", root / "ctr_head" / "1")
    shutil.copy(MODEL_REPOSITORY / "ctr_head" / "config.pbtxt", root / "ctr_head" / "config.pbtxt")
    return root


@pytest.fixture(scope="module")
def trained(synthetic_events, repository, postgres_url) -> Path:
    from services.cli.main import main

    code = main([
        "train", "ctr", "--database-url", postgres_url, "--since", T0.isoformat(), "--until", TRAIN_UNTIL.isoformat(),
        "--out", str(repository), "--quiet",
    ])
    assert code == 0
    return repository / "ctr_head" / "2"


def test_train_ctr_exports_the_next_version_with_the_prior_left_in_place(trained, repository) -> None:
    from training.ctr import ctr_install

    assert (trained / "model.onnx").is_file()
    assert not ctr_install.is_ctr_head_up_to_date(repository, 2)
    assert ctr_install.is_ctr_head_up_to_date(repository, 1)
    assert ctr_install.holds_other_model(repository, 2)
    assert ctr_install.latest_trained_version(repository) == 2
    assert ctr_install.next_trained_version(repository) == 3


def test_trained_head_metadata_records_kind_window_rows_and_metrics(trained) -> None:
    metadata = json.loads((trained / "metadata.json").read_text())
    assert metadata["kind"] == "trained on events"
    assert metadata["window"] == {"since": "2021-03-01T00:00:00Z", "until": "2021-03-04T00:00:00Z"}
    assert metadata["features"] == list(FEATURE_NAMES) and metadata["outputs"] == ["ctr", "ctcvr"]
    train, validation = metadata["rows"]["train"], metadata["rows"]["validation"]
    # 2880 impressions in the 3 days; numbers 0, 25, 50, ... were logged without features.
    without = len(range(0, 2880, 25))
    assert train["impressions"] + validation["impressions"] == 2880 - without
    assert metadata["skipped_impressions_without_features"] == without
    assert train["last_impression_at"] < validation["first_impression_at"]
    assert 0.5 < metadata["validation_metrics"]["ctr_auc_served"] <= 1.0
    # The family with the lower validation loss is exported, checked against its own model.
    assert set(metadata["candidates"]) == {"mlp", "trees"} and metadata["chosen_head"] in metadata["candidates"]
    check = "onnx_vs_trees_max_abs_diff" if metadata["chosen_head"] == "trees" else "onnx_vs_torch_max_abs_diff"
    assert metadata[check] <= 1e-5
    seen = metadata["position_bias"]["seen_probability"]
    assert seen[0] > seen[1] > seen[4], "examination should fall with the position"


def test_trained_head_graph_matches_the_committed_triton_config(trained) -> None:
    import onnxruntime as ort
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    config = text_format.Parse((trained.parent / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    session = ort.InferenceSession(str(trained / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type) for i in session.get_inputs()] == [(i.name, "tensor(float)") for i in config.input]
    assert [(o.name, o.type) for o in session.get_outputs()] == [(o.name, "tensor(float)") for o in config.output]
    assert [list(i.dims) for i in config.input] == [session.get_inputs()[0].shape[1:]]
    for batch in (1, 7, config.max_batch_size):
        ctr, ctcvr = session.run(["ctr", "ctcvr"], {"features": np.random.default_rng(batch).random((batch, 8), dtype=np.float32)})
        assert ctr.shape == ctcvr.shape == (batch, 1)
        assert (ctcvr <= ctr + 1e-7).all() and (ctr > 0).all() and (ctr < 1).all()


def test_eval_ctr_prints_every_row_for_both_tasks_and_writes_the_report(trained, postgres_url, repository, tmp_path, capsys) -> None:
    from services.cli.main import main

    out = tmp_path / "ctr_eval.json"
    code = main([
        "eval", "ctr", "--database-url", postgres_url, "--repository", str(repository), "--until", EVAL_UNTIL.isoformat(),
        "--bootstrap", "30", "--out", str(out), "--quiet",
    ])
    printed = capsys.readouterr().out
    assert code == 0, printed
    expected = [
        "ours: ctr_head v2 ctr (position removed, as served)",
        "ours: ctr_head v2 ctr x position tower",
        "prior: ctr_head v1 ctr (the feature scoring)",
        "ours: ctr_head v2 ctcvr (position removed, as served)",
        "ours: ctr_head v2 ctcvr x position tower",
        "prior: ctr_head v1 ctcvr (the feature scoring)",
        "logistic regression (features)",
        "logistic regression (features + position)",
        "LightGBM (features)",
        "LightGBM (features + position)",
    ]
    for label in expected:
        assert label in printed, label
    report = json.loads(out.read_text())
    assert report["evaluation_window"] == {"since": "2021-03-04T00:00:00Z", "until": "2021-03-06T00:00:00Z"}
    assert [row["task"] for row in report["rows"]].count("click") == 7
    assert [row["task"] for row in report["rows"]].count("purchase") == 7
    for row in report["rows"]:
        for metric in ("auc", "position_stratified_auc"):
            low, high = row[metric]["95"]
            assert 0.0 <= low <= row[metric]["value"] <= high <= 1.0
        assert row["log_loss"] > 0
    references = {row["model"]: row["reference"] for row in report["rows"] if row["task"] == "click"}
    assert references["ours: ctr_head v2 ctr (position removed, as served)"] == "LightGBM (features)"
    assert references["ours: ctr_head v2 ctr x position tower"] == "LightGBM (features + position)"
    assert report["evaluation_rows"]["first_impression_at"] >= "2021-03-04T00:00:00Z"


def test_eval_ctr_refuses_a_window_that_overlaps_training(trained, postgres_url, repository, tmp_path, capsys) -> None:
    from services.cli.main import main

    code = main([
        "eval", "ctr", "--database-url", postgres_url, "--repository", str(repository),
        "--since", (TRAIN_UNTIL - timedelta(hours=1)).isoformat(), "--out", str(tmp_path / "r.json"), "--quiet",
    ])
    assert code == 2
    assert "later window" in capsys.readouterr().err
