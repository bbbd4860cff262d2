"""RecBole's SASRec baseline evaluates on exactly our leave-one-out split (same test and
validation targets and histories, same users), ranks without excluding history items, caches
its result by data, settings and RecBole version, and leaves the caller's process as it was."""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

pytest.importorskip("recbole", reason="RecBole is not installed (the `eval` extra: pip install -e '.[eval]')")

from training.rec.recbole_baseline import (  # noqa: E402
    SASREC_SETTINGS,
    SasrecRun,
    _recbole_process,
    cache_key,
    prepare,
    rescore,
    run_sasrec,
    sasrec_settings,
)

# Users of 4 to 53 items; items repeat within and across users; one history is longer than
# RecBole's MAX_ITEM_LIST_LENGTH (50).
SEQUENCES = [
    [1, 2, 3, 4],
    [5, 3, 6, 3, 7],
    [2, 8, 9, 10, 11, 12],
    [12, 11, 10, 9, 8, 7, 6],
    [4, 4, 5, 1],
    [(i % 25) + 1 for i in range(53)],  # 25 items, more than the top 20 ranked
]


@pytest.fixture(scope="module")
def recbole_split(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp("recbole")
    with _recbole_process(work_dir, threads=1):
        _, dataset, train, valid, test = prepare("fixture", SEQUENCES, work_dir, sasrec_settings(epochs=1, seed=7))
    return dataset, train, valid, test


def _samples(dataset, loader):
    """Our user index -> (history, target) for each sample of a RecBole loader, in our ids."""
    feat = loader._dataset.inter_feat
    samples = []
    for user, target, history, length in zip(
        feat["user_id"].tolist(), feat["item_id"].tolist(), feat["item_id_list"].tolist(), feat["item_length"].tolist()
    ):
        to_ours = lambda ids: [int(token) for token in dataset.id2token("item_id", ids)]  # noqa: E731
        samples.append((int(dataset.id2token("user_id", user)) - 1, (to_ours(history[:length]), to_ours([target])[0])))
    return samples


def test_recbole_tests_every_user_on_our_last_item_after_the_rest_of_the_sequence(recbole_split):
    dataset, _, _, test = recbole_split
    samples = _samples(dataset, test)
    assert len(samples) == len(SEQUENCES)
    assert dict(samples) == {user: (seq[:-1][-50:], seq[-1]) for user, seq in enumerate(SEQUENCES)}


def test_recbole_validates_every_user_on_our_second_last_item(recbole_split):
    dataset, _, valid, _ = recbole_split
    samples = _samples(dataset, valid)
    assert len(samples) == len(SEQUENCES)
    assert dict(samples) == {user: (seq[:-2][-50:], seq[-2]) for user, seq in enumerate(SEQUENCES)}


def test_recbole_trains_only_on_items_before_the_validation_item(recbole_split):
    dataset, train, _, _ = recbole_split
    targets = Counter((user, target) for user, (_, target) in _samples(dataset, train))
    assert targets == Counter((user, item) for user, seq in enumerate(SEQUENCES) for item in seq[1:-2])


def test_recbole_ranks_history_items_too_for_sequential_models(recbole_split):
    _, _, valid, test = recbole_split
    for loader in (valid, test):
        for _, history_index, _, _ in loader:
            assert history_index is None  # nothing is masked but the padding id


def test_cache_key_changes_with_the_data_the_settings_and_the_recbole_version():
    settings = sasrec_settings(epochs=None, seed=2020)
    key = cache_key(SEQUENCES, settings, "1.2.1")
    assert key == cache_key([list(seq) for seq in SEQUENCES], dict(settings), "1.2.1")
    assert key != cache_key(SEQUENCES[:-1], settings, "1.2.1")
    assert key != cache_key([[2, 1, 3, 4], *SEQUENCES[1:]], settings, "1.2.1")
    assert key != cache_key(SEQUENCES, sasrec_settings(epochs=50, seed=2020), "1.2.1")
    assert key != cache_key(SEQUENCES, sasrec_settings(epochs=None, seed=1), "1.2.1")
    assert key != cache_key(SEQUENCES, {**settings, "hidden_size": 32}, "1.2.1")
    assert key != cache_key(SEQUENCES, settings, "1.2.2")
    assert settings["epochs"] == 300 and settings["loss_type"] == SASREC_SETTINGS["loss_type"] == "CE"


def test_a_second_run_is_read_from_the_cache_unless_fresh_and_the_process_is_left_as_it_was(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["shelfwise", "--epochs=5", "--learning_rate=1"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    work_dir = tmp_path / "build" / "recbole" / "fixture"

    first = run_sasrec("fixture", SEQUENCES, work_dir, epochs=1, seed=7)
    assert first["cached"] is False
    assert first["epochs_run"] == 1 and first["stopped_early"] is False and first["users"] == len(SEQUENCES)
    assert first["config"]["epochs"] == 1 and first["config"]["learning_rate"] == 0.001
    assert 0.0 <= first["ndcg@10"] <= first["recall@10"] <= first["recall@20"] <= 1.0
    assert sorted(path.name for path in tmp_path.iterdir()) == ["build"]  # no log/ or saved/ here
    assert (work_dir / "result.json").is_file() and (work_dir / "recbole.log").is_file()
    assert sys.argv == ["shelfwise", "--epochs=5", "--learning_rate=1"]
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3" and Path.cwd() == tmp_path
    assert not torch.is_anomaly_enabled()  # RecBole's sine.py switches it on when imported

    again = run_sasrec("fixture", SEQUENCES, work_dir, epochs=1, seed=7)
    assert again == {**first, "cached": True}
    assert run_sasrec("fixture", SEQUENCES, work_dir, epochs=1, seed=7, run=SasrecRun(fresh=True))["cached"] is False


def test_our_evaluator_ranks_recboles_model_as_recbole_does_and_a_resumed_run_continues_from_the_checkpoint(tmp_path):
    work_dir = tmp_path / "fixture"
    first = run_sasrec("fixture", SEQUENCES, work_dir, epochs=1, seed=7)
    # RecBole prints its metrics to 4 decimal places.
    for metric in ("recall@10", "ndcg@10", "recall@20", "ndcg@20"):
        assert first["history_kept_our_evaluator"][metric] == pytest.approx(first[metric], abs=5.1e-5)
    # The last user's test target is already in its history: a miss once history is excluded.
    assert first["history_excluded"]["recall@20"] <= 5 / 6

    resumed = run_sasrec("fixture", SEQUENCES, work_dir, epochs=3, seed=7, run=SasrecRun(resume=True))
    assert resumed["cached"] is False and resumed["resumed_from_epoch"] == 0 and resumed["epochs_run"] == 3
    again = rescore("fixture", SEQUENCES, work_dir, seed=7)
    assert again["checkpoint_epoch"] == resumed["best_epoch"]
    assert again["history_excluded"] == pytest.approx(resumed["history_excluded"])

    # `shelfwise eval rec --recbole-checkpoint` scores that same checkpoint, without training.
    from training.rec.eval_rec import RecboleRun, run_recbole

    row = run_recbole("fixture", SEQUENCES, work_dir, RecboleRun(None, 1, False, checkpoint=True))
    assert row["checkpoint"] and row["checkpoint_epoch"] == again["checkpoint_epoch"]
    assert row["history_excluded"] == pytest.approx(again["history_excluded"])
    assert row["ndcg@10"] == pytest.approx(again["ndcg@10"])
    missing = run_recbole("fixture", SEQUENCES, tmp_path / "none", RecboleRun(None, 1, False, checkpoint=True))
    assert "no checkpoint at" in missing["unavailable"] and "python -m training.rec.recbole_baseline fixture" in missing["unavailable"]


def test_resuming_without_a_checkpoint_says_what_to_run_first(tmp_path):
    with pytest.raises(FileNotFoundError, match="run without --resume first"):
        run_sasrec("fixture", SEQUENCES, tmp_path / "empty", epochs=2, seed=7, run=SasrecRun(resume=True))


def test_sequences_too_short_for_the_same_split_are_refused(tmp_path):
    with pytest.raises(ValueError, match="fewer than 4"):
        run_sasrec("fixture", [*SEQUENCES, [1, 2, 3]], tmp_path)
