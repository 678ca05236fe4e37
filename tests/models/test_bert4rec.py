"""BERT4Rec: the contract, bidirectional attention with the [MASK] appended for scoring, the cloze loss going
down, generation, item attributes, and next-item prediction on sequences with a strict order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genrec.data.interactions import Histories
from genrec.data.splits import split_leave_one_out
from genrec.models.bert4rec import BERT4Rec
from tests.models.contract import RecommenderContract
from tests.models.scenarios import (
    beats_popularity_on_cycles,
    blocks_split,
    cold_item_split,
    cyclic_sequences,
    own_group_cold_item_first,
)

FAST = {"progress": False}


def tiny_bert4rec(**kw) -> BERT4Rec:
    params = dict(dim=16, max_len=20, n_heads=1, dropout=0.2, mask_prob=0.3, epochs=15, batch_size=32, lr=1e-2,
                  train_options=FAST)
    return BERT4Rec(**{**params, **kw})


class TestBERT4Rec(RecommenderContract):
    beats_popularity_by = 0.2

    @pytest.fixture(scope="class")
    @classmethod
    def split(cls, data):
        return blocks_split()

    def make_model(self):
        return tiny_bert4rec()


def _network():
    model = tiny_bert4rec()
    model.n_items_, model.item_features_ = 30, None
    return model, model._build_module().eval()


def test_attention_is_bidirectional_and_padding_is_ignored():
    _, net = _network()
    tokens = torch.tensor([[0, 0, 3, 7, 9, 31]])  # 31 is [MASK]
    later = tokens.clone()
    later[0, 4] = 12
    padded = torch.tensor([[0, 0, 0, 0, 3, 7, 9, 31]])
    with torch.no_grad():
        table = net.items.table()
        a, b, c = net.encode(tokens, table), net.encode(later, table), net.encode(padded, table)
    assert not torch.allclose(a[:, 2], b[:, 2])  # an earlier position sees a later item
    torch.testing.assert_close(a[:, 2:], c[:, 4:], atol=1e-5, rtol=1e-5)


def test_scoring_reads_the_appended_mask():
    model, _ = _network()
    tokens = model._score_input(Histories.from_lists([[2, 5, 6], []], n_items=30))
    assert tokens[:, -1].tolist() == [31, 31] and tokens[0, -4:-1].tolist() == [3, 6, 7]


def test_cloze_loss_goes_down():
    split = blocks_split()
    model = tiny_bert4rec(epochs=10).fit(split.train)
    losses = [r["loss"] for r in model.history_]
    assert losses[-1] < 0.95 * losses[0], losses


def test_predicts_the_next_item_of_a_cycle_far_better_than_popularity():
    beats_popularity_on_cycles(tiny_bert4rec(epochs=40, mask_prob=0.5, dropout=0.1), min_hr=0.8)


def test_generation_samples_unseen_items_and_is_seeded():
    split = split_leave_one_out(cyclic_sequences(n_users=100))
    model = tiny_bert4rec(epochs=2).fit(split.train)
    h = split.test.histories[:10]
    a = model.generate(h, n_steps=4, temperature=1.0, top_k=5, seed=1)
    assert np.array_equal(np.stack(a), np.stack(model.generate(h, n_steps=4, temperature=1.0, top_k=5, seed=1)))
    for u, g in enumerate(a):
        assert len(set(g)) == 4 and not set(g) & set(h.sequence(u))


def test_item_features_place_items_with_one_event_in_their_category():
    train, histories, cold = cold_item_split()
    model = tiny_bert4rec(item_features=["category"], epochs=10).fit(train)
    assert own_group_cold_item_first(model, histories, cold, train.item_attributes) >= 0.7
