"""SASRec: the contract, causal attention, the three losses, sampled generation, item attributes for items with
no training events, and next-item prediction on sequences with a strict order. The shared sequence machinery
(windows, batches, masking, attribute tokens) is specified in tests/training/test_sequences.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from genrec.data.interactions import DataError
from genrec.data.splits import split_leave_one_out
from genrec.models.sasrec import SASRec
from tests.conftest import block_interactions
from tests.models.contract import RecommenderContract
from tests.models.scenarios import (
    beats_popularity_on_cycles,
    blocks_split,
    cold_item_split,
    cyclic_sequences,
    own_group_cold_item_first,
)

FAST = {"progress": False}


def tiny_sasrec(**kw) -> SASRec:
    params = dict(dim=16, max_len=20, dropout=0.5, epochs=12, batch_size=32, lr=1e-2, train_options=FAST)
    return SASRec(**{**params, **kw})


class TestSASRec(RecommenderContract):
    beats_popularity_by = 0.3  # it reaches about 1.9x popularity's NDCG@10 (1.45x over seeds 0-3)

    @pytest.fixture(scope="class")
    @classmethod
    def split(cls, data):
        return blocks_split()

    def make_model(self):
        return tiny_sasrec()


# the network ------------------------------------------------------------------------------------------------
def _network(**kw):
    model = tiny_sasrec(**kw)
    model.n_items_, model.item_features_ = 30, None
    return model._build_module().eval()


def test_changing_a_later_item_leaves_earlier_positions_unchanged():
    net = _network()
    tokens = torch.tensor([[0, 0, 3, 7, 9, 12, 4], [5, 6, 7, 8, 9, 10, 11]])
    changed = tokens.clone()
    changed[:, 5] = 20
    with torch.no_grad():
        a, b = net.encode(tokens, net.items.table()), net.encode(changed, net.items.table())
    torch.testing.assert_close(a[:, :5], b[:, :5])
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_left_padding_does_not_change_the_hidden_states_of_items():
    net = _network()
    tokens = torch.tensor([[3, 7, 9]])
    padded = torch.tensor([[0, 0, 0, 3, 7, 9]])
    with torch.no_grad():
        a, b = net.encode(tokens, net.items.table()), net.encode(padded, net.items.table())
    torch.testing.assert_close(a, b[:, 3:], atol=1e-5, rtol=1e-5)


def test_dropout_drops_the_right_share_keeps_the_mean_and_replays_under_a_seed():
    from genrec.models.sasrec import dropout

    x = torch.ones(100, 50, 41)  # an odd size: the last 64-bit draw is only partly used
    torch.manual_seed(4)
    y = dropout(x, 0.3, training=True)
    assert abs((y == 0).float().mean().item() - 0.3) < 0.01 and abs(y.mean().item() - 1.0) < 0.02
    torch.manual_seed(4)
    torch.testing.assert_close(dropout(x, 0.3, training=True), y)
    assert dropout(x, 0.3, training=False) is x


@pytest.mark.parametrize("loss,sampling", [("ce", "uniform"), ("sampled", "uniform"), ("sampled", "popularity"),
                                           ("bce", "uniform")])
def test_each_loss_trains_and_its_loss_goes_down(loss, sampling):
    split = blocks_split()
    model = tiny_sasrec(loss=loss, sampling=sampling, n_negatives=16, epochs=6).fit(split.train)
    losses = [r["loss"] for r in model.history_]
    assert np.isfinite(losses).all() and losses[-1] < 0.9 * losses[0], losses


def test_xavier_embedding_init_matches_the_reference_scale_and_still_learns_cycles():
    model = tiny_sasrec(embedding_init="xavier", epochs=20, train_options={**FAST, "patience": 3})
    beats_popularity_on_cycles(model)
    net = model.module_
    n_tokens, dim = net.items.weight.shape
    fresh = type(net)(model.n_items_, model.max_len, dim, model.n_blocks, model.n_heads, 0.0, "ce", 16, "uniform",
                      torch.ones(model.n_items_), embedding_init="xavier")
    assert abs(fresh.items.weight.std().item() - (2 / (n_tokens + dim)) ** 0.5) < 0.2 * (2 / (n_tokens + dim)) ** 0.5
    scaled = type(net)(model.n_items_, model.max_len, dim, model.n_blocks, model.n_heads, 0.0, "ce", 16, "uniform",
                       torch.ones(model.n_items_))
    assert abs(scaled.items.weight.std().item() - dim**-0.5) < 0.2 * dim**-0.5


def test_unknown_embedding_init_is_named():
    with pytest.raises(ValueError, match="embedding_init must be one of"):
        tiny_sasrec(embedding_init="orthogonal").fit(block_interactions())


def test_unknown_loss_is_named():
    with pytest.raises(ValueError, match="loss must be one of"):
        tiny_sasrec(loss="hinge").fit(block_interactions())


# next-item prediction on ordered data -------------------------------------------------------------------------
def test_predicts_the_next_item_of_a_cycle_far_better_than_popularity():
    beats_popularity_on_cycles(tiny_sasrec(epochs=20, train_options={**FAST, "patience": 3}))


# generation ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cyclic_model():
    split = split_leave_one_out(cyclic_sequences())
    return tiny_sasrec(epochs=15).fit(split.train), split


def test_generation_excludes_seen_and_already_generated_items(cyclic_model):
    model, split = cyclic_model
    h = split.test.histories[:30]
    for u, generated in enumerate(model.generate(h, n_steps=8, temperature=2.0, seed=3)):
        assert len(set(generated)) == 8 and not set(generated) & set(h.sequence(u))
    kept = model.generate(h, n_steps=8, temperature=0, exclude_seen=False)
    assert all(len(g) == 8 for g in kept)


def test_greedy_generation_continues_the_cycle(cyclic_model):
    model, split = cyclic_model
    h = split.test.histories[:20]
    greedy = model.generate(h, n_steps=3, temperature=0)
    assert np.array_equal(np.stack(greedy), np.stack(model.generate(h, n_steps=3, top_k=1, seed=9)))
    assert np.mean([g[0] for g in greedy] == split.test.targets[:20].indices) >= 0.9


def test_temperature_and_top_k_shape_the_samples(cyclic_model):
    model, split = cyclic_model
    one = split.test.histories[[0] * 200]  # 200 draws of the first step for one history
    scores = model.score(one[:1])[0]
    scores[one.matrix[0].indices] = -np.inf

    def first(**kw):
        return np.array([g[0] for g in model.generate(one, n_steps=1, **kw)])

    cold, hot = first(temperature=0.05), first(temperature=50.0)
    assert np.mean(cold == scores.argmax()) >= 0.95
    assert len(set(hot)) >= 3 * len(set(cold)) and len(set(hot)) > 10
    top3 = set(np.argsort(-scores)[:3])
    assert set(first(temperature=50.0, top_k=3)) <= top3
    assert np.array_equal(first(seed=5), first(seed=5)) and not np.array_equal(first(seed=5, temperature=50.0),
                                                                               first(seed=6, temperature=50.0))


# item attributes ----------------------------------------------------------------------------------------------
def test_item_features_place_items_with_one_event_in_their_category():
    train, histories, cold = cold_item_split()
    with_features = tiny_sasrec(item_features=["category"], epochs=8).fit(train)
    without = tiny_sasrec(epochs=8).fit(train)
    attrs = train.item_attributes
    assert own_group_cold_item_first(with_features, histories, cold, attrs) >= 0.8
    assert own_group_cold_item_first(without, histories, cold, attrs) <= 0.65  # chance is 0.25


def test_item_features_survive_save_and_load(tmp_path):
    train, histories, _ = cold_item_split()
    model = tiny_sasrec(item_features=["category"], epochs=2).fit(train)
    model.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["state"]["feature_vocab"] == {"category": ["c0", "c1", "c2", "c3"]}
    np.testing.assert_allclose(SASRec.load(tmp_path / "m").score(histories), model.score(histories), atol=1e-5)


def test_unknown_item_feature_is_named():
    with pytest.raises(DataError, match="'genre'"):
        tiny_sasrec(item_features=["genre"]).fit(block_interactions())
