"""Reading purchase sequences, the leave-one-out split and training batches."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from training.rec.sequential_data import (
    dataset_key,
    dataset_stem,
    eval_split,
    item_counts,
    load_amazon,
    prefix_batches,
    right_aligned,
    training_batches,
    training_pairs,
    training_sequences,
)


@pytest.fixture()
def data_dir(tmp_path):
    folder = tmp_path / "amazon_seq"
    folder.mkdir()
    (folder / "Beauty.txt").write_text("1 1 2 3 4 5\n2 3 5 2 6 1 4\n3 6 5 4 3 2\n", encoding="utf-8")
    (folder / "Beauty_item2attributes.json").write_text(
        json.dumps({"1": [1, 2], "2": [2], "3": [3, 1, 3], "5": [4]}), encoding="utf-8"
    )
    return tmp_path


def test_dataset_names_accept_short_names_and_file_stems():
    assert dataset_stem("beauty") == "Beauty"
    assert dataset_stem("Sports_and_Outdoors") == "Sports_and_Outdoors"
    assert dataset_stem("toys") == "Toys_and_Games"
    assert dataset_key("Toys_and_Games") == "toys"
    with pytest.raises(ValueError, match="unknown dataset"):
        dataset_stem("movies")


def test_amazon_file_reads_users_in_order_with_attributes(data_dir):
    data = load_amazon("beauty", data_dir)
    assert data.name == "Beauty"
    assert data.sequences == [[1, 2, 3, 4, 5], [3, 5, 2, 6, 1, 4], [6, 5, 4, 3, 2]]
    assert data.num_items == 6
    assert data.num_attributes == 4
    assert data.attributes[0] == [] and data.attributes[4] == [] and data.attributes[6] == []
    assert data.attributes[1] == [1, 2] and data.attributes[3] == [1, 3]  # duplicates dropped
    assert data.content is None


def test_missing_file_names_the_setting(tmp_path):
    with pytest.raises(FileNotFoundError, match="SHELFWISE_DATA_DIR"):
        load_amazon("beauty", tmp_path)


def test_leave_one_out_holds_out_the_last_two_items():
    sequences = [[1, 2, 3, 4, 5], [3, 5, 2, 6, 1, 4]]
    assert training_sequences(sequences) == [[1, 2, 3], [3, 5, 2, 6]]
    assert training_sequences(sequences, validate=False) == sequences
    valid = eval_split(sequences, "valid")
    assert valid.histories == [[1, 2, 3], [3, 5, 2, 6]]
    assert valid.targets.tolist() == [4, 1]
    test = eval_split(sequences, "test")
    assert test.histories == [[1, 2, 3, 4], [3, 5, 2, 6, 1]]
    assert test.targets.tolist() == [5, 4]
    assert test.users.tolist() == [0, 1]


def test_users_too_short_for_a_split_are_left_out():
    valid = eval_split([[1, 2], [1, 2, 3]], "valid")
    assert valid.users.tolist() == [1] and valid.targets.tolist() == [2]
    with pytest.raises(ValueError):
        eval_split([[1, 2, 3]], "train")


def test_windows_are_right_aligned_with_left_padding():
    window = right_aligned([[7], [1, 2, 3, 4, 5]], max_length=4)
    assert window.tolist() == [[0, 0, 0, 7], [2, 3, 4, 5]]
    assert right_aligned([[7], [1, 2]], max_length=4, width=2).tolist() == [[0, 7], [1, 2]]


def test_popularity_counts_every_interaction():
    counts = item_counts([[1, 2, 2], [2, 3]], num_items=4)
    assert counts.tolist() == [0, 1, 3, 1, 0]


def test_training_batches_shift_by_one_cover_every_user_and_trim_to_the_longest():
    sequences = training_pairs([[1, 2], [3], [1, 2, 3, 4, 5, 6, 7], [4, 5, 6], [2, 4, 6, 1]])
    assert len(sequences) == 4   # a single item yields no (prefix, next item) pair
    seen = []
    for inputs, targets in training_batches(sequences, batch_size=2, max_length=4, rng=random.Random(0)):
        assert inputs.shape == targets.shape and inputs.shape[1] <= 4
        for row_in, row_out in zip(inputs, targets):
            real_in, real_out = row_in[row_in > 0], row_out[row_out > 0]
            assert len(real_in) == len(real_out)
            # Padding on the left only, and the target of a slot is the next input item.
            assert np.all(row_in[len(row_in) - len(real_in):] > 0)
            assert list(real_in[1:]) == list(real_out[:-1])
            seen.append(tuple(real_in) + (real_out[-1],))
        assert inputs[:, -1].min() > 0   # every row ends in the last slot
    # The long user is cut to its newest max_length + 1 items.
    assert sorted(seen) == sorted([(1, 2), (3, 4, 5, 6, 7), (4, 5, 6), (2, 4, 6, 1)])


def test_prefix_batches_give_every_pair_once_with_the_target_in_the_last_slot():
    sequences = training_pairs([[1, 2], [3, 4, 5, 6, 7, 8, 9], [4, 5, 6], [2, 4, 6, 1]])
    seen = []
    for inputs, targets in prefix_batches(sequences, batch_size=3, max_length=4, rng=random.Random(0)):
        assert inputs.shape == targets.shape and inputs.shape[1] <= 4
        # Only the last slot is a target; every prefix ends in the last input slot.
        assert not targets[:, :-1].any() and targets[:, -1].min() > 0
        assert inputs[:, -1].min() > 0
        for row, target in zip(inputs, targets[:, -1]):
            real = row[row > 0]
            assert np.all(row[len(row) - len(real):] > 0)   # padding on the left only
            seen.append((tuple(real), int(target)))
    expected = [(tuple(seq[max(0, end - 4):end]), seq[end]) for seq in sequences for end in range(1, len(seq))]
    # Every (prefix -> next item) pair once, long prefixes cut to their newest max_length items.
    assert sorted(seen) == sorted(expected)
    assert ((6, 7, 8), 9) not in seen and ((5, 6, 7, 8), 9) in seen
