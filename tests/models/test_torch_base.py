"""TorchRecommender's validator under DDP, without processes: each rank's contribution (per-user sums and its user
count, what `all_reduce_sum` adds over ranks) must add up to the metrics of all validation users, also when there
are more ranks than users and a rank has none."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import genrec.distributed
from genrec.models.multvae import MultDAE
from genrec.training.trainer import TrainOptions
from tests.models.scenarios import blocks_split


@pytest.fixture(scope="module")
def fitted():
    split = blocks_split()
    model = MultDAE(hidden_dims=(16,), epochs=2, batch_size=64, train_options={"progress": False})
    return model.fit(split.train), split


def _rank_contributions(model, split, validation, world_size, monkeypatch):
    """Each rank's validator's input to the all-reduce, and the metrics every rank would then see."""
    sent = []

    def one_rank_sum(values, device=None):  # records what this rank sends; the sum over ranks is taken below
        sent.append(np.array(values, dtype=np.float64))
        return list(values)

    monkeypatch.setattr(genrec.distributed, "all_reduce_sum", one_rank_sum)
    options = TrainOptions(monitor="ndcg@10")
    for rank in range(world_size):
        trainer = SimpleNamespace(options=options, rank=rank, world_size=world_size, device=None)
        model._validator(validation, split.train, trainer)()
    total = np.sum(sent, axis=0)
    return sent, total[:-1] / total[-1]


@pytest.mark.parametrize("n_users, world_size", [(50, 2), (50, 3), (2, 3)])
def test_the_ranks_shares_add_up_to_the_metrics_of_all_users(fitted, monkeypatch, n_users, world_size):
    model, split = fitted
    validation = split.validation.subset(np.arange(n_users))
    alone = SimpleNamespace(options=TrainOptions(monitor="ndcg@10"), rank=0, world_size=1, device=None)
    expected = model._validator(validation, split.train, alone)()
    sent, combined = _rank_contributions(model, split, validation, world_size, monkeypatch)
    assert sorted(expected) == ["ndcg@10", "recall@10", "recall_liang@10"]
    assert np.allclose(combined, [expected[k] for k in sorted(expected)], rtol=1e-12, atol=1e-12)
    users_per_rank = [int(s[-1]) for s in sent]
    with_targets = int((np.diff(validation.targets.tocsr().indptr) > 0).sum())  # users without targets do not count
    assert sum(users_per_rank) == with_targets > 0
    if n_users < world_size:
        assert users_per_rank[-1] == 0 and np.all(sent[-1] == 0)  # the rank without users adds nothing
