"""RecVAE: the contract, the composite prior's density, the loss against a dense computation of the official
formulas, KL weight proportional to history length, and the alternating encoder/decoder updates."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from genrec.models.recvae import RecVAE, RecVAENetwork, composite_prior_log_density, log_normal
from genrec.training.data import CSRRows, sparse_rows
from genrec.training.trainer import Trainer
from tests.models.contract import RecommenderContract
from tests.models.scenarios import assert_fold_in_follows_taste_group, blocks_split

FAST = {"progress": False, "monitor": "ndcg@10"}
WEIGHTS = (3 / 20, 3 / 4, 1 / 10)


class TestRecVAE(RecommenderContract):
    beats_popularity_by = 1.0  # at least twice popularity's NDCG@10 (it reaches about 3x)

    @pytest.fixture(scope="class")
    @classmethod
    def split(cls, data):
        return blocks_split()

    def make_model(self):
        return RecVAE(hidden_dim=64, latent_dim=16, epochs=20, batch_size=32, train_options=FAST)

    def test_fold_in_recommends_from_the_new_users_taste_group(self, fitted, split):
        assert_fold_in_follows_taste_group(fitted, split)


def _net(n_items=30, **kw):
    torch.manual_seed(0)
    args = {"hidden_dim": 16, "latent_dim": 4, "dropout": 0.0, "gamma": 0.005, "beta": None,
            "mixture_weights": WEIGHTS, "n_enc_epochs": 3, "n_dec_epochs": 1, **kw}
    return RecVAENetwork(n_items, **args)


def _matrix(seed=0, n_users=7, n_items=30):
    rng = np.random.default_rng(seed)
    m = sp.random(n_users, n_items, density=0.2, random_state=rng, format="csr", dtype=np.float32)
    m.data[:] = 1.0
    return m


def _normal_pdf(z, mu, var):
    return np.exp(-0.5 * (z - mu) ** 2 / var) / np.sqrt(2 * np.pi * var)


def test_composite_prior_is_the_weighted_mixture_of_its_three_normals():
    z = torch.linspace(-6, 6, 25, dtype=torch.float64).reshape(5, 5)
    old_mu, old_logvar = torch.full_like(z, 1.5), torch.full_like(z, -1.0)
    got = composite_prior_log_density(z, old_mu, old_logvar, WEIGHTS).numpy()
    zn = z.numpy()
    want = np.log(WEIGHTS[0] * _normal_pdf(zn, 0, 1) + WEIGHTS[1] * _normal_pdf(zn, 1.5, math.exp(-1))
                  + WEIGHTS[2] * _normal_pdf(zn, 0, math.exp(10)))
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_composite_prior_integrates_to_one_and_has_heavy_tails():
    z = torch.linspace(-3000, 3000, 1_200_001, dtype=torch.float64)
    density = composite_prior_log_density(z, torch.full_like(z, 2.0), torch.full_like(z, -2.0), WEIGHTS).exp()
    assert torch.trapezoid(density, z).item() == pytest.approx(1.0, abs=1e-4)
    far = torch.tensor([50.0], dtype=torch.float64)  # the wide component keeps far codes finite and likely-ish
    tail = composite_prior_log_density(far, torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64))
    assert tail.item() == pytest.approx(math.log(0.1) + log_normal(far, 0.0, 10.0).item(), abs=1e-9)


def test_kl_weight_is_gamma_times_history_length():
    m = _matrix()
    net = _net(gamma=0.01)
    np.testing.assert_allclose(net.kl_weight(sparse_rows(m)).numpy(), 0.01 * np.diff(m.indptr), rtol=1e-6)
    assert (_net(beta=0.3).kl_weight(sparse_rows(m)) == 0.3).all()


def _dense_encoder(enc, x):
    """The official encoder on a dense input."""
    x = x / (x.norm(dim=1, keepdim=True) + 1e-10)
    hs = [enc.norms[0](F.silu(x @ enc.input_layer.weight + enc.input_layer.bias))]
    for layer, norm in zip(enc.layers, enc.norms[1:]):
        hs.append(norm(F.silu(layer(hs[-1]) + sum(hs))))
    return enc.mu(hs[-1]), enc.logvar(hs[-1])


def test_encoder_loss_equals_the_dense_official_computation():
    m = _matrix()
    x = torch.from_numpy(m.toarray())
    net = _net()
    with torch.no_grad():  # make the old encoder differ from the current one
        for p in net.old_encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    torch.manual_seed(3)
    loss = net.encoder_loss(sparse_rows(m))
    torch.manual_seed(3)
    mu, logvar = _dense_encoder(net.encoder, x)
    z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
    old_mu, old_logvar = _dense_encoder(net.old_encoder, x)
    mll = (torch.log_softmax(net.decoder(z), dim=1) * x).sum(1)
    kld = (log_normal(z, mu, logvar) - composite_prior_log_density(z, old_mu, old_logvar, WEIGHTS)).sum(1)
    torch.testing.assert_close(loss, -(mll - 0.005 * x.sum(1) * kld).mean(), rtol=1e-5, atol=1e-5)


def test_each_epoch_is_three_encoder_passes_then_one_decoder_pass():
    assert _net().phases(0) == ["encoder-1", "encoder-2", "encoder-3", "decoder-1"]


def _params(module):
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def test_encoder_passes_move_only_the_encoder_and_decoder_passes_only_the_decoder():
    net = _net(dropout=0.5)
    net.phases = lambda epoch: ["encoder-1"]
    before = _params(net)
    Trainer(epochs=1, batch_size=4, lr=1e-2, options={"progress": False}).fit(net, CSRRows(_matrix()))
    after = _params(net)
    assert all(not torch.equal(before[k], after[k]) for k in before if k.startswith("encoder."))
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("encoder."))
    net.phases = lambda epoch: ["decoder-1"]
    Trainer(epochs=1, batch_size=4, lr=1e-2, options={"progress": False}).fit(net, CSRRows(_matrix()))
    final = _params(net)
    assert all(torch.equal(after[k], final[k]) for k in after if k.startswith("encoder."))
    assert all(not torch.equal(after[k], final[k]) for k in after if k.startswith("decoder."))


def test_the_prior_takes_the_encoder_after_its_passes_of_the_epoch():
    net = _net(dropout=0.5)
    initial_old = _params(net.old_encoder)
    Trainer(epochs=1, batch_size=4, lr=1e-2, options={"progress": False}).fit(net, CSRRows(_matrix()))
    for k, v in _params(net.encoder).items():  # copied before the decoder pass, which leaves the encoder alone
        assert torch.equal(_params(net.old_encoder)[k], v)
        assert not torch.equal(initial_old[k], v)


def test_official_default_hyperparameters():
    m = RecVAE()
    assert (m.hidden_dim, m.latent_dim, m.dropout, m.gamma, m.n_enc_epochs, m.n_dec_epochs, m.batch_size,
            m.lr, m.epochs) == (600, 200, 0.5, 0.005, 3, 1, 500, 5e-4, 50)
    assert m.mixture_weights == pytest.approx(WEIGHTS)


def test_bad_mixture_weights_are_named():
    with pytest.raises(ValueError, match="mixture_weights"):
        RecVAE(mixture_weights=(0.5, 0.5, 0.5)).fit(blocks_split().train)
