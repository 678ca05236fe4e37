"""Mult-VAE and Mult-DAE: the contract, the sparse input layer and likelihood against dense formulas, Liang's
beta schedule, fold-in, and a training run killed mid-epoch that resumes to the uninterrupted weights."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from genrec.models.multvae import MultDAE, MultVAE, MultVAENetwork, SparseLinear, multinomial_nll, normalized_input
from genrec.training.data import sparse_rows
from genrec.training.trainer import StepContext
from tests.models.contract import RecommenderContract
from tests.models.scenarios import assert_fold_in_follows_taste_group, blocks_split
from tests.training.kill_resume import assert_same_weights, kill_then_resume

REPO = Path(__file__).resolve().parents[2]
FAST = {"progress": False, "monitor": "ndcg@10"}


class TestMultVAE(RecommenderContract):
    beats_popularity_by = 1.0  # at least twice popularity's NDCG@10 (it reaches about 3x)

    @pytest.fixture(scope="class")
    @classmethod
    def split(cls, data):
        return blocks_split()

    def make_model(self):
        return MultVAE(hidden_dims=(64, 16), epochs=20, batch_size=32, train_options=FAST)

    def test_fold_in_recommends_from_the_new_users_taste_group(self, fitted, split):
        assert_fold_in_follows_taste_group(fitted, split)


class TestMultDAE(TestMultVAE):
    def make_model(self):
        return MultDAE(hidden_dims=(32,), epochs=20, batch_size=32, train_options=FAST)


def _batch(seed=0, n_users=7, n_items=30):
    rng = np.random.default_rng(seed)
    m = sp.random(n_users, n_items, density=0.2, random_state=rng, format="csr", dtype=np.float32)
    m.data[:] = 1.0
    m = (sp.diags((np.arange(n_users) != 3).astype(np.float32)) @ m).tocsr()  # user 3 has an empty history
    m.eliminate_zeros()
    return sparse_rows(m), torch.from_numpy(m.toarray())


def test_sparse_first_layer_equals_dense_first_layer_on_the_same_weights():
    torch.manual_seed(0)
    batch, x = _batch()
    layer = SparseLinear(30, 16)
    torch.nn.init.normal_(layer.weight)
    torch.nn.init.normal_(layer.bias)
    x_normalized = x / x.norm(dim=1, keepdim=True).clamp_min(1e-6)
    dense = x_normalized @ layer.weight + layer.bias
    sparse = layer(batch, normalized_input(batch, dropout=0.0, training=True))
    torch.testing.assert_close(sparse, dense, rtol=0, atol=1e-5)


def test_input_dropout_drops_history_entries_and_rescales_the_rest():
    torch.manual_seed(0)
    batch, _ = _batch(n_users=50, n_items=200)
    kept = normalized_input(batch, dropout=0.5, training=True)
    full = normalized_input(batch, dropout=0.0, training=True)
    share = (kept > 0).float().mean().item()
    assert 0.35 < share < 0.65
    torch.testing.assert_close(kept[kept > 0], 2 * full[kept > 0])


def _dense_forward(net: MultVAENetwork, x: torch.Tensor):
    h = (x / x.norm(dim=1, keepdim=True).clamp_min(1e-6)) @ net.input_layer.weight + net.input_layer.bias
    for layer in net.encoder:
        h = layer(torch.tanh(h))
    return h


def test_vae_loss_equals_dense_multinomial_plus_annealed_kl():
    torch.manual_seed(0)
    batch, x = _batch()
    net = MultVAENetwork(30, (12, 4), dropout=0.0, variational=True, anneal_cap=0.2, total_anneal_steps=100)
    torch.manual_seed(5)
    loss = net.loss(batch, step=30)
    torch.manual_seed(5)
    h = _dense_forward(net, x)
    mu, logvar = h[:, :4], h[:, 4:]
    z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
    logits = net.decoder[1](torch.tanh(net.decoder[0](z)))
    nll = -(torch.log_softmax(logits, dim=1) * x).sum(1).mean()
    kl = (0.5 * (-logvar + logvar.exp() + mu**2 - 1)).sum(1).mean()
    torch.testing.assert_close(loss, nll + 0.2 * kl, rtol=1e-5, atol=1e-5)  # beta = min(0.2, 30 / 100)


def test_multinomial_likelihood_and_its_gradient_equal_the_dense_log_softmax():
    x = sp.random(7, 30, density=0.2, random_state=np.random.default_rng(3), format="csr", dtype=np.float64)
    batch = sparse_rows(x)
    batch = batch._replace(values=batch.values.double())
    logits = torch.randn(7, 30, dtype=torch.float64, requires_grad=True)
    dense = -(torch.log_softmax(logits, dim=1) * torch.from_numpy(x.toarray())).sum(1)
    torch.testing.assert_close(multinomial_nll(logits, batch), dense)
    weights = torch.rand(7, dtype=torch.float64)  # any upstream gradient, not only the batch mean's
    (got,) = torch.autograd.grad((multinomial_nll(logits, batch) * weights).sum(), logits)
    (want,) = torch.autograd.grad((dense * weights).sum(), logits)
    torch.testing.assert_close(got, want)


def test_dae_loss_equals_dense_multinomial_plus_l2_on_weights():
    torch.manual_seed(0)
    batch, x = _batch()
    net = MultVAENetwork(30, (8,), dropout=0.0, variational=False, weight_decay=0.01, batch_size=7)
    logits = net.decoder[0](torch.tanh(_dense_forward(net, x)))
    nll = -(torch.log_softmax(logits, dim=1) * x).sum(1).mean()
    l2 = net.input_layer.weight.pow(2).sum() + net.decoder[0].weight.pow(2).sum()  # biases are not penalised
    torch.testing.assert_close(net.loss(batch, step=0), nll + 0.01 / 7 * l2, rtol=1e-5, atol=1e-5)


def test_beta_rises_by_one_over_total_anneal_steps_until_the_cap():
    net = MultVAENetwork(10, (6, 2), 0.5, True, anneal_cap=0.2, total_anneal_steps=200_000)
    assert net.beta(0) == 0.0
    assert net.beta(20_000) == pytest.approx(0.1)
    assert net.beta(40_000) == pytest.approx(0.2)  # Liang's schedule reaches the cap at cap * total steps
    assert net.beta(10**7) == 0.2


def test_training_step_uses_the_global_update_count_for_beta():
    torch.manual_seed(0)
    batch, _ = _batch()
    net = MultVAENetwork(30, (12, 4), 0.0, True, anneal_cap=1.0, total_anneal_steps=10).eval()
    ctx = lambda step: StepContext(epoch=0, step=step, phase="main", device=torch.device("cpu"), n_epochs=1)  # noqa: E731
    assert net.training_step(batch, ctx(10)) > net.training_step(batch, ctx(0))  # the KL term is switched on


def test_mult_vae_default_hyperparameters_are_liangs():
    m, d = MultVAE(), MultDAE()
    assert (m.hidden_dims, m.dropout, m.anneal_cap, m.total_anneal_steps, m.batch_size, m.lr) == \
        ((600, 200), 0.5, 0.2, 200_000, 500, 1e-3)
    assert (d.hidden_dims, d.weight_decay) == ((200,), 0.01)


def test_bad_hidden_dims_are_named():
    with pytest.raises(ValueError, match="hidden_dims"):
        MultVAE(hidden_dims=(0, 4)).fit(blocks_split().train)


def test_kill_mid_epoch_then_resume_gives_the_uninterrupted_weights(tmp_path):
    """A real MultVAE training process is SIGKILLed during its third epoch; a new process resumes from the
    checkpoint and ends with exactly the weights of a run that was never interrupted (best epoch included)."""
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from safetensors.torch import save_file
        from genrec.models.multvae import MultVAE
        from genrec.training.data import CSRRows
        from tests.models.scenarios import blocks_split
        from tests.models.test_multvae import FAST

        class SlowRows(CSRRows):
            def batch(self, idx):
                if sys.argv[1] == "slow":
                    time.sleep(0.05)
                return super().batch(idx)

        class SlowMultVAE(MultVAE):
            def _training_data(self, train):
                return SlowRows(train.csr(binary=True))

        split = blocks_split()
        model = SlowMultVAE(hidden_dims=(64, 16), epochs=4, batch_size=32,
                            train_options={{**FAST, "checkpoint_dir": sys.argv[2]}})
        model.fit(split.train, validation=split.validation)
        save_file({{k: v.contiguous() for k, v in model.module_.state_dict().items()}}, sys.argv[3])
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *sys.path]), "OMP_NUM_THREADS": "1"}
    assert_same_weights(*kill_then_resume(script, tmp_path, env, wait_s=90))


def test_reusing_freed_memory_changes_no_weight():
    """keep_freed_memory (on for Mult-VAE) only changes how glibc hands out memory: same seed, same weights."""
    split = blocks_split()
    weights = []
    for keep in (False, True):
        model = MultVAE(hidden_dims=(32, 8), epochs=2, batch_size=64,
                        train_options={**FAST, "keep_freed_memory": keep}).fit(split.train)
        weights.append(model.module_.state_dict())
    assert_same_weights(*weights)


def test_bfloat16_autocast_on_cpu_trains_to_the_float32_quality():
    """TrainOptions.amp_cpu runs the Linear layers' products in bfloat16 (float32 weights and Adam): the loss of
    each epoch stays within 1% of float32's and its NDCG within 10% of float32's, well above popularity."""
    from genrec.evaluation.evaluate import evaluate
    from genrec.models import Popularity

    split = blocks_split()
    runs = {amp: MultVAE(hidden_dims=(64, 16), epochs=8, batch_size=32,
                         train_options={**FAST, "amp_cpu": amp}).fit(split.train) for amp in (False, True)}
    for exact, low in zip(runs[False].history_, runs[True].history_):
        assert abs(low["loss"] - exact["loss"]) <= 0.01 * exact["loss"]
    assert all(p.dtype == torch.float32 for p in runs[True].module_.parameters())
    ndcg = {amp: evaluate(m, split.test, ks=(10,), metrics=("ndcg",)).summary["ndcg@10"] for amp, m in runs.items()}
    popular = evaluate(Popularity().fit(split.train), split.test, ks=(10,), metrics=("ndcg",)).summary["ndcg@10"]
    assert ndcg[True] >= 1.5 * popular and abs(ndcg[True] - ndcg[False]) <= 0.1 * ndcg[False], (ndcg, popular)
