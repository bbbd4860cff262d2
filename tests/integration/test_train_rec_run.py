"""Training the sequential recommender for real on a small synthetic shop the test writes itself
(the Amazon files may not be copied into the repository): the model must learn the pattern and
beat popularity on the validation item; the `train rec` and `eval rec` commands run end to end
on the same data laid out like the benchmark folder."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from training.rec.eval_rec import evaluate_model, evaluate_popularity
from training.rec.eval_rec import main as eval_main
from training.rec.rec_training import (
    FULL_SOFTMAX_MAX_ITEMS,
    SAMPLED_NEGATIVES,
    RecSettings,
    default_negatives,
    resolve_settings,
    train_model,
)
from training.rec.sequential_data import SequenceData, eval_split, item_counts, training_sequences
from training.rec.train_rec import main as train_main

NUM_ITEMS = 50
REPOSITORY = Path(__file__).resolve().parents[2]


def synthetic_shop(users: int = 200, seed: int = 3) -> SequenceData:
    """Each user walks one of five "routes" through the catalogue: after item i comes the next
    item of the route, so the next purchase is predictable from the last one, while every item
    is about equally popular. Attributes: the route an item belongs to."""
    rng = random.Random(seed)
    routes = [list(range(1 + r, NUM_ITEMS + 1, 5)) for r in range(5)]
    sequences = []
    for _ in range(users):
        route = rng.choice(routes)
        start = rng.randrange(len(route))
        length = rng.randint(5, 9)
        sequences.append([route[(start + k) % len(route)] for k in range(length)])
    attributes = [[]] + [[1 + (item - 1) % 5] for item in range(1, NUM_ITEMS + 1)]
    return SequenceData("synthetic", sequences, NUM_ITEMS, attributes, num_attributes=5)


def fast_settings(**overrides) -> RecSettings:
    base = dict(dim=32, num_layers=1, num_heads=2, dropout=0.1, attention_dropout=0.1, id_dropout=0.1,
                epochs=12, patience=3, batch_size=32, lr=5e-3, seed=1)
    base.update(overrides)
    return RecSettings(**base)


@pytest.fixture(autouse=True)
def one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("variant", [{"examples": "sequences"}, {"examples": "prefixes"},
                                     {"examples": "prefixes", "untied_output": True}])
def test_training_beats_popularity_on_the_validation_item(variant):
    data = synthetic_shop()
    model, report = train_model(data, fast_settings(**variant), progress=False)
    valid = eval_split(data.sequences, "valid")
    ours = evaluate_model(model, valid, data.num_items)["metrics"]
    popularity = evaluate_popularity(item_counts(training_sequences(data.sequences), NUM_ITEMS), valid)["metrics"]
    assert report["best_valid"]["ndcg@10"] == pytest.approx(ours["ndcg@10"], abs=1e-4)  # the best state is kept
    assert 1 <= report["best_epoch"] <= report["epochs_run"] <= 12
    assert ours["ndcg@10"] > popularity["ndcg@10"] + 0.2, (ours, popularity)
    assert ours["recall@10"] > 0.8


def test_only_the_untied_output_correction_gets_the_output_decay():
    from training.rec.rec_training import build_model, parameter_groups

    data = synthetic_shop(users=20)
    tied = build_model(data, fast_settings())
    assert parameter_groups(tied, fast_settings()) == [{"params": list(tied.parameters())}]
    settings = fast_settings(untied_output=True, output_decay=3.0, weight_decay=0.01)
    untied = build_model(data, settings)
    rest, correction = parameter_groups(untied, settings)
    assert correction["params"] == [untied.output_embedding.weight] and correction["weight_decay"] == 3.0
    assert "weight_decay" not in rest   # the optimizer's default, settings.weight_decay
    assert {id(p) for p in rest["params"]} | {id(untied.output_embedding.weight)} == {id(p) for p in untied.parameters()}
    assert len(rest["params"]) == len(list(untied.parameters())) - 1


def test_settings_that_contradict_each_other_are_refused():
    data = synthetic_shop(users=20)
    with pytest.raises(ValueError, match="prefixes already train every pair"):
        train_model(data, fast_settings(examples="prefixes", all_positions=True), progress=False)
    with pytest.raises(ValueError, match="output_decay is for untied_output"):
        train_model(data, fast_settings(output_decay=1.0), progress=False)
    with pytest.raises(ValueError, match="examples must be"):
        train_model(data, fast_settings(examples="windows"), progress=False)


def test_the_default_loss_is_the_full_softmax_up_to_a_catalogue_size_then_sampled():
    assert default_negatives(FULL_SOFTMAX_MAX_ITEMS) == 0
    assert default_negatives(FULL_SOFTMAX_MAX_ITEMS + 1) == SAMPLED_NEGATIVES > 0
    data = synthetic_shop(users=20)
    assert resolve_settings(fast_settings(), data).negatives == 0
    # A choice given stays, also on a small catalogue (softmax_loss then scores every item anyway).
    assert resolve_settings(fast_settings(negatives=8), data).negatives == 8


def test_training_without_hold_out_runs_the_fixed_number_of_epochs():
    data = synthetic_shop(users=60)
    model, report = train_model(data, fast_settings(validate=False, epochs=2), progress=False)
    assert report["epochs_run"] == 2 and report["best_valid"] is None
    assert np.isfinite(model.item_vectors().detach().numpy()).all()


def test_a_resumed_run_ends_exactly_where_an_unbroken_one_does(tmp_path):
    import torch

    # Dropout, ID dropout and the untied correction all draw on the random states the
    # checkpoint has to carry over.
    settings = dict(patience=100, untied_output=True, dropout=0.2)
    data = synthetic_shop(users=80)
    whole, whole_report = train_model(data, fast_settings(epochs=4, **settings), progress=False,
                                      checkpoint=tmp_path / "whole.pt")
    first, first_report = train_model(data, fast_settings(epochs=2, **settings), progress=False,
                                      checkpoint=tmp_path / "split.pt")
    assert first_report["resumed_from_epoch"] == 0 and first_report["epochs_run"] == 2
    resumed, report = train_model(data, fast_settings(epochs=4, **settings), progress=False,
                                  checkpoint=tmp_path / "split.pt", resume=True)
    assert report["resumed_from_epoch"] == 2 and report["epochs_run"] == 4
    assert [(e["loss"], e["valid"]) for e in report["epochs"]] == [(e["loss"], e["valid"]) for e in whole_report["epochs"]]
    assert report["best_epoch"] == whole_report["best_epoch"] and report["best_valid"] == whole_report["best_valid"]
    for name, tensor in whole.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name
    last_whole = torch.load(tmp_path / "whole.pt", weights_only=True)
    last_split = torch.load(tmp_path / "split.pt", weights_only=True)
    for name, tensor in last_whole["model"].items():   # the last epoch's weights, not only the best's
        assert torch.equal(tensor, last_split["model"][name]), name
    assert not list(tmp_path.glob("*.partial"))


def test_resume_refuses_a_missing_checkpoint_other_data_and_other_settings(tmp_path):
    data = synthetic_shop(users=40)
    checkpoint = tmp_path / "checkpoint.pt"
    with pytest.raises(FileNotFoundError, match="start the run without --resume"):
        train_model(data, fast_settings(epochs=1), progress=False, checkpoint=checkpoint, resume=True)
    train_model(data, fast_settings(epochs=1), progress=False, checkpoint=checkpoint)
    with pytest.raises(ValueError, match="dim 32 there, 16 now.*only epochs, patience"):
        train_model(data, fast_settings(epochs=2, dim=16), progress=False, checkpoint=checkpoint, resume=True)
    other = SequenceData("other", data.sequences, NUM_ITEMS, data.attributes, num_attributes=5)
    with pytest.raises(ValueError, match="trained on synthetic"):
        train_model(other, fast_settings(epochs=2), progress=False, checkpoint=checkpoint, resume=True)
    # When to stop may change; a run already at its epoch cap has nothing left to train.
    _, report = train_model(data, fast_settings(epochs=1, patience=5), progress=False, checkpoint=checkpoint,
                            resume=True)
    assert report["epochs_run"] == 1 and report["resumed_from_epoch"] == 1 and report["best_epoch"] == 1


def write_benchmark_folder(data_dir, data: SequenceData) -> None:
    """`data` laid out as `amazon_seq/Beauty.txt` and its attributes file."""
    folder = data_dir / "amazon_seq"
    folder.mkdir(parents=True)
    (folder / "Beauty.txt").write_text(
        "".join(f"{user} {' '.join(map(str, seq))}\n" for user, seq in enumerate(data.sequences, 1)), encoding="utf-8"
    )
    (folder / "Beauty_item2attributes.json").write_text(
        json.dumps({str(i): a for i, a in enumerate(data.attributes) if i}), encoding="utf-8"
    )


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_kill_keeps_the_best_epoch_so_far_and_resume_goes_on(tmp_path, stop_signal, capsys):
    write_benchmark_folder(tmp_path / "data", synthetic_shop())
    out = tmp_path / "rec"
    options = ["--dataset", "beauty", "--data-dir", str(tmp_path / "data"), "--out", str(out), "--patience", "1000",
               "--batch-size", "32", "--layers", "1", "--no-progress"]
    # Far more epochs and patience than it will get: only Ctrl-C ends this run.
    process = subprocess.Popen(
        [sys.executable, "-m", "training.rec.train_rec", *options, "--epochs", "1000"],
        cwd=REPOSITORY, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        for line in process.stderr:
            if line.startswith("epoch 2:"):
                break
        process.send_signal(stop_signal)
        # communicate, not wait: it keeps reading stderr, so a child with much left to say
        # (warnings while it saves the model) cannot block on a full pipe until the timeout.
        _, rest = process.communicate(timeout=60)
        assert "keeping the best epoch so far" in rest
    finally:
        process.kill()
    assert process.returncode == 130
    report = json.loads((out / "training_report.json").read_text())
    assert report["interrupted"] and not report["stopped_early"]
    assert report["epochs_run"] >= 2 and 1 <= report["best_epoch"] <= report["epochs_run"]
    assert (out / "model.pt").exists()

    # The same command with --resume picks up after the last finished epoch (the one the
    # signal cut short is trained again) and keeps the curve so far.
    epochs = report["epochs_run"] + 2
    capsys.readouterr()
    assert train_main([*options, "--epochs", str(epochs), "--resume"]) == 0
    assert "starting over" not in capsys.readouterr().err
    resumed = json.loads((out / "training_report.json").read_text())
    assert resumed["resumed_from_epoch"] >= 2 and resumed["epochs_run"] == epochs and not resumed["interrupted"]
    assert resumed["epochs"][:2] == report["epochs"][:2]


def test_running_again_without_resume_says_it_starts_over(tmp_path, capsys):
    write_benchmark_folder(tmp_path / "data", synthetic_shop(users=60))
    command = ["--dataset", "beauty", "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "rec"),
               "--epochs", "1", "--batch-size", "32", "--layers", "1", "--no-progress"]
    assert train_main(command) == 0
    assert "starting over" not in capsys.readouterr().err
    assert train_main(command) == 0
    assert "starting over; the checkpoint of an earlier run" in capsys.readouterr().err


def test_train_and_eval_commands_write_model_reports_and_table(tmp_path, capsys, monkeypatch):
    data = synthetic_shop()
    write_benchmark_folder(tmp_path / "data", data)
    out = tmp_path / "rec" / "beauty"
    code = train_main(["--dataset", "beauty", "--data-dir", str(tmp_path / "data"), "--out", str(out),
                       "--epochs", "3", "--patience", "2", "--batch-size", "32", "--lr", "5e-3", "--layers", "1",
                       "--dropout", "0.1", "--no-progress"])
    assert code == 0
    for name in ("model.pt", "config.json", "training_report.json"):
        assert (out / name).exists()
    report = json.loads((out / "training_report.json").read_text())
    # No --negatives: a catalogue this small trains with the full softmax, saved as such.
    assert json.loads((out / "config.json").read_text())["settings"]["negatives"] == 0
    assert report["settings"]["negatives"] == 0
    assert report["machine"]["torch_threads"] == 1 and report["machine"]["cpu_count"] >= 1
    assert report["epochs_run"] <= 3 and report["training_seconds"] >= 0 and "ndcg@10" in report["best_valid"]

    reports = tmp_path / "reports"
    code = eval_main(["--dataset", "beauty", "--data-dir", str(tmp_path / "data"), "--models-dir",
                      str(tmp_path / "rec"), "--skip-recbole", "--reports-dir", str(reports), "--bootstrap", "200"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Shelfwise sequential (ours)" in printed and "Popularity" in printed
    assert "not available (skipped with --skip-recbole)" in printed
    assert "published, not re-run" in printed and "history excluded" in printed
    result = json.loads((reports / "rec-beauty.json").read_text())
    ours, ours_kept, _, popularity = result["rows"]
    assert ours["history_excluded"] and not ours_kept["history_excluded"]
    assert ours["metrics"]["ndcg@10"] >= ours_kept["metrics"]["ndcg@10"]
    assert set(ours["metrics"]) == {"recall@10", "ndcg@10", "recall@20", "ndcg@20"}
    low, high = ours["ndcg@10_ci"]
    assert low <= ours["metrics"]["ndcg@10"] <= high
    assert result["users"] == 200

    # A RecBole result (stubbed: the real run takes hours) lands in its row and in the comparison.
    import training.rec.eval_rec as eval_rec

    def fake_recbole(name, sequences, work_dir, run):
        assert name == "Beauty" and len(sequences) == 200 and work_dir.name == "Beauty"
        return {"recall@10": 0.5, "ndcg@10": 0.25, "recall@20": 0.6, "ndcg@20": 0.3, "train_seconds": 1.0,
                "epochs_run": 3, "cached": True, "config": {"epochs": 3}}

    monkeypatch.setattr(eval_rec, "run_recbole", fake_recbole)
    assert eval_main(["--dataset", "beauty", "--data-dir", str(tmp_path / "data"), "--models-dir",
                      str(tmp_path / "rec"), "--reports-dir", str(reports), "--bootstrap", "100"]) == 0
    printed = capsys.readouterr().out
    assert "RecBole SASRec (3-epoch cap" in printed and "ours - RecBole SASRec NDCG@10" in printed
    recbole = json.loads((reports / "rec-beauty.json").read_text())["rows"][2]
    assert recbole["metrics"]["ndcg@10"] == 0.25 and recbole["history_excluded"] is False

    # --recbole-checkpoint: the best checkpoint of an unfinished run, named as such.
    def fake_checkpoint(name, sequences, work_dir, run):
        assert run.checkpoint
        return {"recall@10": 0.5, "ndcg@10": 0.25, "recall@20": 0.6, "ndcg@20": 0.3, "checkpoint": True,
                "checkpoint_epoch": 20, "best_valid_ndcg@10": 0.05, "checkpoint_epoch_cap": 300,
                "history_excluded": {"recall@10": 0.6, "ndcg@10": 0.3, "recall@20": 0.7, "ndcg@20": 0.35}}

    monkeypatch.setattr(eval_rec, "run_recbole", fake_checkpoint)
    assert eval_main(["--dataset", "beauty", "--data-dir", str(tmp_path / "data"), "--models-dir",
                      str(tmp_path / "rec"), "--reports-dir", str(reports), "--bootstrap", "100",
                      "--recbole-checkpoint"]) == 0
    printed = capsys.readouterr().out
    assert "RecBole SASRec (checkpoint, epoch 20)" in printed and "validation NDCG@10 0.0500" in printed
    assert "RecBole SASRec, same model, our evaluator" in printed


def test_eval_without_a_trained_model_says_which_command_to_run(tmp_path, capsys):
    code = eval_main(["--dataset", "toys", "--models-dir", str(tmp_path), "--skip-recbole"])
    assert code == 2
    assert "shelfwise train rec --dataset toys" in capsys.readouterr().err
