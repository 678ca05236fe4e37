"""GRU4Rec: the contract for GRU and LSTM cells, causality, the reference implementation's losses (cross-entropy
with in-batch and sampled negatives or the full softmax, BPR-max with score regularisation) checked against
their formulas and going down, generation, item attributes, and next-item prediction on ordered sequences."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from genrec.data.splits import split_leave_one_out
from genrec.models.gru4rec import GRU4Rec
from tests.models.contract import RecommenderContract
from tests.models.scenarios import (
    beats_popularity_on_cycles,
    blocks_split,
    cold_item_split,
    cyclic_sequences,
    own_group_cold_item_first,
)

FAST = {"progress": False}


def tiny_gru4rec(**kw) -> GRU4Rec:
    params = dict(dim=32, max_len=20, n_negatives=32, epochs=12, batch_size=32, lr=1e-2, dropout_hidden=0.2,
                  train_options=FAST)
    return GRU4Rec(**{**params, **kw})


class TestGRU4Rec(RecommenderContract):
    beats_popularity_by = 0.2

    @pytest.fixture(scope="class")
    @classmethod
    def split(cls, data):
        return blocks_split()

    def make_model(self):
        return tiny_gru4rec()


class TestGRU4RecLSTMBPRMax(TestGRU4Rec):
    def make_model(self):
        return tiny_gru4rec(cell="lstm", loss="bpr-max")


def _network(**kw):
    model = tiny_gru4rec(**kw)
    model.n_items_, model.item_features_ = 30, None
    return model._build_module()


def test_outputs_are_causal_and_ignore_right_padding():
    net = _network().eval()
    tokens = torch.tensor([[3, 7, 9, 12, 4, 0, 0]])
    changed = tokens.clone()
    changed[0, 3] = 20
    with torch.no_grad():
        table = net.items.table()
        a, b = net.encode(tokens, table), net.encode(changed, table)
        short = net.encode(tokens[:, :5], table)
    torch.testing.assert_close(a[:, :3], b[:, :3])
    assert not torch.allclose(a[:, 3], b[:, 3])
    torch.testing.assert_close(a[:, :5], short, atol=1e-6, rtol=1e-5)


def test_bpr_max_matches_its_formula():
    net = _network(loss="bpr-max", bpreg=0.7, elu_param=0.5)
    scores = torch.randn(3, 5)
    target = torch.tensor([0, 1, 2])
    excluded = torch.zeros(3, 5, dtype=torch.bool)
    excluded[0, 4] = True  # an accidental hit: not a negative of row 0
    got = net.loss(scores, target, excluded, log_q=None)
    r = F.elu(scores, 0.5)
    total = 0.0
    for i in range(3):
        neg = [j for j in range(5) if j != target[i] and not excluded[i, j]]
        s = torch.softmax(r[i, neg], 0)
        total += -torch.log((s * torch.sigmoid(r[i, target[i]] - r[i, neg])).sum()) + 0.7 * (s * r[i, neg] ** 2).sum()
    torch.testing.assert_close(got, total / 3)


def test_cross_entropy_drops_accidental_hits_and_applies_logq():
    net = _network(loss="ce", logq=1.0)
    scores, log_q = torch.randn(2, 4), torch.randn(2, 4)
    excluded = torch.tensor([[False, False, True, False], [False, True, False, False]])  # row 1's column 1: own
    got = net.loss(scores, torch.tensor([0, 1]), excluded, log_q)
    z = scores - log_q
    want = (torch.logsumexp(z[0, [0, 1, 3]], 0) - z[0, 0] + torch.logsumexp(z[1], 0) - z[1, 1]) / 2
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("loss,n_negatives,cell", [("ce", 16, "gru"), ("ce", 0, "gru"), ("ce", None, "lstm"),
                                                   ("bpr-max", 16, "gru"), ("bpr-max", None, "lstm")])
def test_each_loss_trains_and_its_loss_goes_down(loss, n_negatives, cell):
    split = blocks_split()
    model = tiny_gru4rec(loss=loss, n_negatives=n_negatives, cell=cell, epochs=6, logq=0.5).fit(split.train)
    losses = [r["loss"] for r in model.history_]
    assert np.isfinite(losses).all() and losses[-1] < 0.95 * losses[0], losses


def test_predicts_the_next_item_of_a_cycle_far_better_than_popularity():
    beats_popularity_on_cycles(tiny_gru4rec(epochs=25, n_negatives=None, train_options={**FAST, "patience": 3}))


def test_generation_follows_the_cycle_and_excludes_seen_items():
    split = split_leave_one_out(cyclic_sequences())
    model = tiny_gru4rec(epochs=20, n_negatives=None).fit(split.train)
    h = split.test.histories[:20]
    greedy = np.stack(model.generate(h, n_steps=2, temperature=0))
    assert np.mean(greedy[:, 0] == split.test.targets[:20].indices) >= 0.8
    for u, g in enumerate(model.generate(h, n_steps=5, temperature=3.0, seed=2)):
        assert len(set(g)) == 5 and not set(g) & set(h.sequence(u))


def test_item_features_place_items_with_one_event_in_their_category():
    train, histories, cold = cold_item_split()
    model = tiny_gru4rec(item_features=["category"], epochs=8).fit(train)
    assert own_group_cold_item_first(model, histories, cold, train.item_attributes) >= 0.7
