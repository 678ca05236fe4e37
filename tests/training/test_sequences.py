"""The machinery the sequence models share (genrec.training.sequences): windows of ordered histories, batches
grouped by length, BERT4Rec's masking, item attributes as tokens, and the sampling steps of generation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from genrec.data.interactions import Histories
from genrec.training.sequences import (
    FeatureIndex,
    SequenceWindows,
    append_items,
    mask_items,
    next_item_pairs,
    sample_items,
    windows,
)
from genrec.training.trainer import Trainer


# windows and batches --------------------------------------------------------------------------------
def test_windows_pad_on_the_chosen_side_and_shift_items_by_one():
    items = np.array([10, 11, 12, 13, 14])
    starts, ends = np.array([0, 3]), np.array([3, 5])
    assert windows(items, starts, ends, 4).tolist() == [[0, 11, 12, 13], [0, 0, 14, 15]]
    assert windows(items, starts, ends, 2, pad_side="right").tolist() == [[12, 13], [14, 15]]
    assert windows(items, starts, ends, 4, pad_side="right").tolist() == [[11, 12, 13, 0], [14, 15, 0, 0]]


def test_long_histories_become_windows_that_predict_every_item_once():
    h = Histories.from_lists([list(range(1, 12)), [20, 21], [30]], n_items=40)
    data = SequenceWindows(h, length=5, stride=4)
    assert len(data) == 4  # 11 items -> 3 windows, 2 items -> 1, a single item has no next item
    inputs, targets = next_item_pairs(data.batch(np.arange(len(data))))
    predicted = sorted(targets[targets > 0].tolist())
    assert predicted == sorted([i + 1 for i in range(2, 12)] + [22])


def test_planned_batches_group_lengths_and_keep_every_window_once():
    h = Histories.from_lists([list(range(n % 17 + 2)) for n in range(500)], n_items=40)
    data = SequenceWindows(h, length=21, stride=20, bucket_batches=8)
    trainer = Trainer(1, 32, 1e-3, seed=0)
    plan = trainer._batches(data, epoch=0)
    assert len(plan) == int(np.ceil(len(data) / 32))
    assert sorted(np.concatenate(plan).tolist()) == list(range(len(data)))
    assert all(np.array_equal(a, b) for a, b in zip(plan, trainer._batches(data, epoch=0)))
    spread = np.mean([np.ptp(data.lengths()[b]) for b in plan])
    assert spread < 0.5 * np.ptp(data.lengths())


def test_masking_hides_at_least_one_item_per_window_and_labels_only_masked_ones():
    torch.manual_seed(0)
    tokens = torch.tensor([[0, 0, 3, 4], [5, 6, 7, 8], [0, 0, 0, 9]])
    inputs, labels = mask_items(tokens, 0.3, mask_token=99)
    masked = inputs == 99
    assert masked.any(1).all() and not masked[tokens == 0].any()
    assert torch.equal(labels, tokens * masked)


# item attributes ----------------------------------------------------------------------------------------------
def test_tags_are_split_and_each_feature_is_a_mean():
    attrs = pd.DataFrame({"category": ["a", "b", None], "tags": ["x|y", "y", "z| x"]})
    index = FeatureIndex.build(attrs, ["category", "tags"], n_items=3)
    assert index.vocab == {"category": ["a", "b"], "tags": ["x", "y", "z"]}
    item0 = slice(index.offsets[0], index.offsets[1])
    assert sorted(index.values[item0]) == [0, 2, 3] and sorted(index.weights[item0]) == [0.5, 0.5, 1.0]
    item2 = slice(index.offsets[2], index.offsets[3])
    assert sorted(index.values[item2]) == [2, 4]  # no category; tags z and x, whitespace stripped


# generation ---------------------------------------------------------------------------------------------------
def test_sampling_keeps_to_the_top_k_and_never_draws_a_forbidden_item():
    scores = torch.tensor([[5.0, 4.0, -np.inf, 3.0, 0.0, -1.0]]).repeat(500, 1)
    drawn = sample_items(scores, temperature=100.0, top_k=3, generator=torch.Generator().manual_seed(0))
    assert set(drawn) == {0, 1, 3}
    drawn = sample_items(scores, temperature=100.0, top_k=None, generator=torch.Generator().manual_seed(0))
    assert 2 not in set(drawn) and len(set(drawn)) == 5


def test_temperature_zero_takes_the_best_item():
    scores = torch.tensor([[0.1, 0.9, 0.5], [2.0, -1.0, 1.0]])
    assert sample_items(scores, 0.0, None, torch.Generator()).tolist() == [1, 0]


def test_appending_an_item_makes_it_the_most_recent_of_each_history():
    h = Histories.from_lists([[3, 1], [2]], n_items=5)
    longer = append_items(h, np.array([4, 0]))
    assert [s.tolist() for s in longer.sequences()] == [[3, 1, 4], [2, 0]]
    assert longer.matrix[0].indices.tolist() == [1, 3, 4] and longer.matrix[1].indices.tolist() == [0, 2]
