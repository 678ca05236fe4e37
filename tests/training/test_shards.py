"""Out-of-core training data: users streamed from Parquet shards, one shard in memory at a time."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from genrec.data.interactions import DataError
from genrec.models.multvae import MultVAE
from genrec.training.shards import UserShards, fit_streaming
from genrec.training.trainer import Trainer
from tests.conftest import block_interactions


@pytest.fixture(scope="module")
def data():
    return block_interactions(n_users=200, n_items=40)


@pytest.fixture()
def shards(data, tmp_path) -> UserShards:
    """The training log in 3 shards of whole users (users hashed to shards, sorted by user inside)."""
    frame = data.to_frame(raw_ids=False)
    paths = []
    for s in range(3):
        part = frame[frame["user"] % 3 == s].sort_values("user", kind="stable")
        paths.append(tmp_path / f"part-{s}.parquet")
        part.to_parquet(paths[-1], index=False)
    return UserShards(paths, data.n_items)


def test_every_user_is_one_example_with_its_items(shards, data):
    assert len(shards) == data.n_users
    users = np.concatenate(shards.shard_users)
    rows = shards.batch(np.arange(len(shards)))
    expected = data.csr(binary=True)[users]
    assert (sp.csr_matrix(rows.to_dense(data.n_items).numpy()) != expected).nnz == 0


def test_an_epoch_plan_visits_each_shard_once_in_whole_batches(shards):
    order = np.random.default_rng(0).permutation(len(shards))
    batches = shards.plan_batches(order, 16)
    assert np.array_equal(np.sort(np.concatenate(batches)), np.arange(len(shards)))
    shard_of_batch = [set(shards.shard_of(b).tolist()) for b in batches]
    assert all(len(s) == 1 for s in shard_of_batch)  # no batch crosses a shard
    visits = [s.pop() for s in shard_of_batch]
    assert len([v for i, v in enumerate(visits) if i == 0 or v != visits[i - 1]]) == shards.n_shards
    assert all(len(b) <= 16 for b in batches)


def test_streaming_training_reads_each_shard_once_per_epoch_and_learns(shards, data):
    model = MultVAE(hidden_dims=(16, 4), epochs=5, batch_size=20, lr=1e-2, train_options={"progress": False})
    fit_streaming(model, shards)
    assert shards.shards_read == 5 * shards.n_shards
    losses = [r["loss"] for r in model.history_]
    assert losses[-1] < losses[0]
    assert model.recommend(data.histories()[:5], k=3).items.shape == (5, 3)


def test_two_ranks_split_each_planned_batch(shards):
    batches = [Trainer(1, 16, 1e-3, seed=0)._batches(shards, 0)]
    for rank in (0, 1):
        trainer = Trainer(1, 16, 1e-3, seed=0)
        trainer.rank, trainer.world_size = rank, 2
        batches.append(trainer._batches(shards, 0))
    whole, r0, r1 = batches
    assert len(whole) == len(r0) == len(r1)
    for b, a0, a1 in zip(whole, r0, r1):
        assert set(a0) | set(a1) == set(b) and (len(b) < 2 or not set(a0) & set(a1))


def test_shards_must_be_sorted_by_user(tmp_path):
    path = tmp_path / "bad.parquet"
    pd.DataFrame({"user": [2, 1], "item": [0, 1]}).to_parquet(path)
    with pytest.raises(DataError, match="bad.parquet"):
        UserShards([path], n_items=2)
