"""CFGAN: the contract, partial-masking and zero-reconstruction negatives, the two players' losses, the training
curves in the run history, user attributes in the condition."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from genrec.data.interactions import Histories, Interactions
from genrec.models.cfgan import CFGAN, CFGANBatch, CFGANNetwork
from genrec.training.data import sparse_rows
from genrec.training.negatives import NegativeSampler, hashed_uniform
from tests.conftest import block_interactions
from tests.models.contract import RecommenderContract
from tests.models.scenarios import blocks_split

FAST = {"progress": False, "monitor": "ndcg@10"}


def _small_cfgan(**params) -> CFGAN:
    """The paper's players with a strong ZR weight and a fast learning rate: on 60 items the adversarial signal
    alone learns slowly."""
    return CFGAN(**{"alpha": 1.0, "lr": 1e-3, "epochs": 20, "train_options": FAST, **params})


class TestCFGAN(RecommenderContract):
    beats_popularity_by = 0.3

    @pytest.fixture(scope="class")
    @classmethod
    def split(cls, data):
        return blocks_split()

    def make_model(self):
        return _small_cfgan()


def _rows(item_lists, n_items, users=None):
    m = Histories.from_lists(item_lists, n_items).matrix
    return sparse_rows(m, users)


# negatives ---------------------------------------------------------------------------------------------------
def _mask(sampler, rows, epoch):
    """(B, n_items) bool: the sampler's negatives as a dense mask."""
    return sampler(rows, epoch).to_dense(sampler.n_items) > 0


def test_negatives_are_the_share_of_each_users_non_purchased_items():
    rows = _rows([[0, 1, 2], [], list(range(40)), [7]], 50)
    mask = _mask(NegativeSampler(50, 0.7, seed=0, stream=1), rows, epoch=0).numpy()
    bought = rows.to_dense(50).numpy() > 0
    np.testing.assert_array_equal(mask.sum(1), np.floor(0.7 * (50 - bought.sum(1))))  # 32, 35, 7, 34
    assert not (mask & bought).any(), "a purchased item is never a negative"


def test_a_user_draws_the_same_negatives_in_every_pass_of_an_epoch_and_new_ones_next_epoch():
    sampler = NegativeSampler(50, 0.5, seed=3, stream=1)
    alone = _mask(sampler, _rows([[1, 2]], 50, users=[9]), epoch=4)[0]
    in_batch = _mask(sampler, _rows([[5], [1, 2], [6, 7]], 50, users=[2, 9, 11]), epoch=4)[1]
    fresh = _mask(NegativeSampler(50, 0.5, seed=3, stream=1), _rows([[1, 2]], 50, users=[9]), epoch=4)[0]
    next_epoch = _mask(sampler, _rows([[1, 2]], 50, users=[9]), epoch=5)[0]
    assert torch.equal(alone, in_batch) and torch.equal(alone, fresh)
    assert not torch.equal(alone, next_epoch)


def test_pm_and_zr_draw_independent_sets_and_a_zero_share_draws_none():
    rows = _rows([[0]], 200)
    pm = _mask(NegativeSampler(200, 0.5, seed=0, stream=1), rows, epoch=0)
    zr = _mask(NegativeSampler(200, 0.5, seed=0, stream=2), rows, epoch=0)
    assert 0.3 < (pm & zr).float().sum() / pm.float().sum() < 0.7  # about half overlap, as two independent draws
    assert not _mask(NegativeSampler(200, 0.0, seed=0, stream=1), rows, epoch=0).any()


def test_max_negatives_caps_each_draw_and_keeps_it_uniform_and_batch_independent():
    n_items, users = 5000, np.arange(400) * 7 + 3
    rows = _rows([list(range(u % 50)) for u in range(400)], n_items, users=users)
    sampler = NegativeSampler(n_items, 0.7, seed=0, stream=1, limit=40)
    mask = _mask(sampler, rows, epoch=2)
    assert (mask.sum(1) == 40).all() and not (mask & (rows.to_dense(n_items) > 0)).any()
    some = _rows([list(range(u % 50)) for u in (5, 17)], n_items, users=users[[5, 17]])
    assert torch.equal(_mask(NegativeSampler(n_items, 0.7, seed=0, stream=1, limit=40), some, epoch=2), mask[[5, 17]])
    counts = mask[:, 50:].sum(0).float()  # items no user bought: each drawn 400 * 40 / ~4970 = 3.2 times on average
    assert abs(counts.mean() - 400 * 40 / 4975) < 0.1 and counts.std() < 2.5


def test_the_sparse_view_is_the_generated_vector_masked_by_purchases_and_pm_negatives():
    net, batch = _network_and_batch()
    view, zero_targets = net.fake(batch, epoch=1, zero_reconstruction=True)
    with torch.no_grad():
        dense = net.generate(batch)
    mask = (batch.rows.to_dense(net.n_items) > 0) | _mask(net.pm_negatives, batch.rows, 1)
    torch.testing.assert_close(view.to_dense(net.n_items), dense * mask)
    zr = _mask(net.zr_negatives, batch.rows, 1)
    torch.testing.assert_close(zero_targets.sort().values, dense[zr].sort().values)


def test_g_output_at_the_losses_entries_only_gives_the_dense_losses_and_gradients():
    torch.manual_seed(0)
    m = sp.random(32, 3000, density=0.01, random_state=np.random.default_rng(0), format="csr", dtype=np.float32)
    m.data[:] = 1.0
    net = CFGANNetwork(3000, 0, (32,), (16,), s_pm=0.7, s_zr=0.7, alpha=0.5, g_l2=1e-3, d_l2=0.0, d_steps=1,
                       g_steps=1, seed=0, max_negatives=20)
    batch = CFGANBatch(sparse_rows(m), torch.zeros(32, 0))
    sampled = net.generator_loss(batch, epoch=0)
    sampled.backward()
    grads = [p.grad.clone() for p in net.generator.parameters()]
    net.zero_grad()
    net.generator.output_at = lambda h, at: net.generator.output(h)[at.rows, at.indices]  # every column, then pick
    dense = net.generator_loss(batch, epoch=0)
    dense.backward()
    torch.testing.assert_close(sampled, dense)
    for got, want in zip(grads, (p.grad for p in net.generator.parameters())):
        torch.testing.assert_close(got, want)


def test_hashed_keys_are_uniform_and_fixed_by_their_inputs():
    keys = hashed_uniform(0, 1, 2, np.arange(100), 1000)
    assert keys.shape == (100, 1000) and 0 <= keys.min() and keys.max() < 1
    assert abs(keys.mean() - 0.5) < 0.01 and abs(keys.std() - np.sqrt(1 / 12)) < 0.01
    np.testing.assert_array_equal(keys[5], hashed_uniform(0, 1, 2, np.array([5]), 1000)[0])
    assert not np.array_equal(keys, hashed_uniform(1, 1, 2, np.arange(100), 1000))


# the two players -------------------------------------------------------------------------------------------------
def _network_and_batch(seed=0, n_users=64, n_items=40):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    m = sp.random(n_users, n_items, density=0.15, random_state=rng, format="csr", dtype=np.float32)
    m.data[:] = 1.0
    net = CFGANNetwork(n_items, 0, (32,), (16,), s_pm=0.5, s_zr=0.5, alpha=0.1, g_l2=0.0, d_l2=0.0, d_steps=1,
                       g_steps=1, seed=seed)
    return net, CFGANBatch(sparse_rows(m), torch.zeros(n_users, 0))


def test_discriminator_steps_lower_its_loss_and_generator_steps_then_fool_it():
    net, batch = _network_and_batch()
    groups = net.param_groups()
    d_opt = torch.optim.Adam(groups["discriminator"], lr=1e-2)
    g_opt = torch.optim.Adam(groups["generator"], lr=1e-2)
    d_before = net.discriminator_loss(batch, epoch=0).item()
    for _ in range(20):
        d_opt.zero_grad()
        net.discriminator_loss(batch, epoch=0).backward()
        d_opt.step()
    d_after = net.discriminator_loss(batch, epoch=0).item()
    assert d_after < d_before - 0.3, (d_before, d_after)
    g_before = net.generator_loss(batch, epoch=0).item()
    for _ in range(20):
        g_opt.zero_grad()
        net.generator_loss(batch, epoch=0).backward()
        g_opt.step()
    assert net.generator_loss(batch, epoch=0).item() < g_before - 0.3
    assert net.discriminator_loss(batch, epoch=0).item() > d_after, "a better G makes D's job harder"


def test_generator_step_leaves_the_discriminator_untouched():
    net, batch = _network_and_batch()
    net.generator_loss(batch, epoch=0).backward()
    assert all(p.grad is None for p in net.discriminator.parameters())
    assert all(p.requires_grad for p in net.discriminator.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.generator.parameters())


def test_zero_reconstruction_drives_sampled_non_purchases_towards_zero():
    net, batch = _network_and_batch()
    net.alpha = 10.0
    opt = torch.optim.Adam(net.param_groups()["generator"], lr=1e-2)
    bought = batch.rows.to_dense(net.n_items) > 0
    before = net.generate(batch)[~bought].mean().item()
    for epoch in range(30):
        opt.zero_grad()
        net.generator_loss(batch, epoch=epoch).backward()
        opt.step()
    assert net.generate(batch)[~bought].mean().item() < before / 2


# training curves, parameters, attributes ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted_small(tmp_path_factory):
    split = blocks_split()
    run = tmp_path_factory.mktemp("run")
    model = _small_cfgan(epochs=4, train_options={**FAST, "checkpoint_dir": str(run)})
    return model.fit(split.train, validation=split.validation), split, run


def test_run_history_holds_both_players_losses_and_discriminator_accuracy(fitted_small):
    model, _, run = fitted_small
    written = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert len(model.history_) == 4 and written == model.history_
    for record in written:
        assert {"loss_discriminator", "loss_generator", "val_ndcg@10"} <= set(record)
        assert 0.0 <= record["d_accuracy_real"] <= 1.0 and 0.0 <= record["d_accuracy_fake"] <= 1.0


def test_different_seeds_give_different_scores(fitted_small):
    model, split, _ = fitted_small
    other = _small_cfgan(epochs=4, seed=1).fit(split.train, validation=split.validation)
    h = split.test.histories
    assert not np.allclose(model.score(h), other.score(h))


@pytest.mark.parametrize("params, field", [({"s_pm": 1.5}, "s_pm"), ({"hidden_dims_g": ()}, "hidden_dims_g"),
                                           ({"d_steps": 0}, "d_steps")])
def test_invalid_hyperparameters_are_named(params, field):
    with pytest.raises(ValueError, match=field):
        _small_cfgan(**params).fit(block_interactions())


def _with_user_groups() -> Interactions:
    data = block_interactions(n_users=200)
    frame = data.to_frame()
    groups = pd.DataFrame({"group": [f"g{u % 4}" for u in data.user_ids.raw]}, index=data.user_ids.raw)
    return Interactions.from_frame(frame, value="value", timestamp="timestamp", user_attributes=groups)


def test_user_attributes_enter_the_condition_and_survive_save_and_load(tmp_path):
    data = _with_user_groups()
    model = _small_cfgan(epochs=3, user_features=["group"]).fit(data)
    assert model.feature_names_ == ["group=g0", "group=g1", "group=g2", "group=g3"]
    h = Histories.from_lists([[0, 4], [0, 4]], data.n_items, user_ids=np.array(["new-a", "new-b"], dtype=object))
    unknown = model.score(h)
    np.testing.assert_allclose(unknown[0], unknown[1])
    model.add_user_attributes(pd.DataFrame({"group": ["g0", "g3"]}, index=["new-a", "new-b"]))
    known = model.score(h)
    assert not np.allclose(known[0], known[1]), "the same history with other attributes scores differently"
    loaded = CFGAN.load(model.save(tmp_path / "model", train=data))
    np.testing.assert_allclose(loaded.score(h), known, atol=1e-6)


def test_unknown_user_feature_is_named():
    with pytest.raises(ValueError, match="'age'"):
        _small_cfgan(user_features=["age"]).fit(_with_user_groups())
