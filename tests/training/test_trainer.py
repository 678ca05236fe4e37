"""The Trainer: deterministic, resumable after a kill, early stopping that restores the best weights."""

from __future__ import annotations

import json
import os
import sys
import textwrap

import numpy as np
import pydantic
import pytest
import scipy.sparse as sp
import torch

from genrec.training.data import CSRRows, sparse_rows
from genrec.training.trainer import Trainer, linear_anneal
from tests.training.kill_resume import assert_same_weights, kill_then_resume


class TinyAutoencoder(torch.nn.Module):
    """Sparse input → 8 → n_items, multinomial likelihood: the shape of Mult-DAE, small enough for tests."""

    def __init__(self, n_items: int):
        super().__init__()
        self.enc = torch.nn.EmbeddingBag(n_items, 8, mode="sum")
        self.dec = torch.nn.Linear(8, n_items)
        self.drop = torch.nn.Dropout(0.3)

    def score(self, batch):
        h = torch.tanh(self.enc(batch.indices, batch.offsets[:-1], per_sample_weights=batch.values))
        return self.dec(self.drop(h))

    def training_step(self, batch, ctx):
        logp = torch.log_softmax(self.score(batch), dim=1)
        return -(logp[batch.rows, batch.indices] * batch.values).sum() / batch.batch_size


def _matrix(seed=0, n_users=200, n_items=50):
    rng = np.random.default_rng(seed)
    m = sp.random(n_users, n_items, density=0.1, random_state=rng, format="csr", dtype=np.float32)
    m.data[:] = 1.0
    return m


def _weights(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _fit(epochs=4, seed=0, **options):
    torch.manual_seed(seed)
    module = TinyAutoencoder(50)
    trainer = Trainer(epochs=epochs, batch_size=32, lr=1e-2, seed=seed, options={"progress": False, **options})
    result = trainer.fit(module, CSRRows(_matrix()))
    return module, result


def test_same_seed_same_weights():
    a, _ = _fit()
    b, _ = _fit()
    for k, v in _weights(a).items():
        assert torch.equal(v, _weights(b)[k])


def test_different_seed_different_weights():
    a, _ = _fit(seed=0)
    b, _ = _fit(seed=1)
    assert not torch.equal(a.dec.weight, b.dec.weight)


def test_loss_goes_down():
    _, result = _fit(epochs=6)
    losses = [r["loss"] for r in result.history]
    assert losses[-1] < losses[0]


def test_unknown_option_is_named():
    with pytest.raises(pydantic.ValidationError, match="chekpoint_dir"):
        Trainer(epochs=1, batch_size=2, lr=1e-3, options={"chekpoint_dir": "x"})


def test_history_and_checkpoint_written(tmp_path):
    _, result = _fit(epochs=3, checkpoint_dir=str(tmp_path / "ckpt"))
    assert (tmp_path / "ckpt" / "latest" / "state.safetensors").exists()
    meta = json.loads((tmp_path / "ckpt" / "latest" / "state.json").read_text())
    assert meta["epoch"] == 2 and len(meta["history"]) == 3


def test_resume_continues_from_the_last_checkpoint(tmp_path):
    full, _ = _fit(epochs=4)
    ckpt = str(tmp_path / "ckpt")
    _fit(epochs=2, checkpoint_dir=ckpt)  # "killed" after two epochs
    resumed, result = _fit(epochs=4, checkpoint_dir=ckpt)
    assert [r["epoch"] for r in result.history] == [0, 1, 2, 3]
    for k, v in _weights(full).items():
        torch.testing.assert_close(_weights(resumed)[k], v, rtol=0, atol=1e-6)


def test_early_stopping_restores_best_weights():
    module = TinyAutoencoder(50)
    trainer = Trainer(epochs=6, batch_size=32, lr=1e-2, options={"progress": False, "patience": 1,
                                                                 "monitor": "score"})
    scores = iter([0.1, 0.5, 0.3, 0.2, 0.9, 0.9])
    snapshots = []

    def validate():
        snapshots.append(_weights(module))
        return {"score": next(scores)}

    result = trainer.fit(module, CSRRows(_matrix()), validate)
    assert result.best_epoch == 1 and len(result.history) == 4  # stopped after two epochs without improvement
    for k, v in snapshots[1].items():
        assert torch.equal(_weights(module)[k], v)


def test_kill_mid_epoch_then_resume_gives_the_uninterrupted_weights(tmp_path):
    """A real process is killed with SIGKILL in the middle of its third epoch; a new one resumes."""
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time, torch
        sys.path.insert(0, {str(os.path.dirname(__file__))!r})
        from test_trainer import TinyAutoencoder, _matrix
        from genrec.training.data import CSRRows
        from genrec.training.trainer import Trainer
        from safetensors.torch import save_file

        class Slow(CSRRows):
            def batch(self, idx):
                if self.slow:
                    time.sleep(0.05)
                return super().batch(idx)

        data = Slow(_matrix()); data.slow = sys.argv[1] == "slow"
        torch.manual_seed(0)
        module = TinyAutoencoder(50)
        Trainer(epochs=4, batch_size=32, lr=1e-2, seed=0,
                options={{"progress": False, "checkpoint_dir": sys.argv[2]}}).fit(module, data)
        save_file({{k: v.contiguous() for k, v in module.state_dict().items()}}, sys.argv[3])
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    assert_same_weights(*kill_then_resume(script, tmp_path, env))


def test_linear_anneal_reaches_cap():
    assert linear_anneal(0, 100, 0.2) == 0.0
    assert linear_anneal(50, 100, 0.2) == pytest.approx(0.1)
    assert linear_anneal(1000, 100, 0.2) == 0.2


def test_sparse_rows_round_trip():
    m = _matrix()
    batch = sparse_rows(m[:5])
    np.testing.assert_array_equal(batch.to_dense(50).numpy(), m[:5].toarray())


class CountingAutoencoder(TinyAutoencoder):
    """Reports its own per-epoch figure, as a GAN reports its discriminator's accuracy."""

    def epoch_metrics(self, epoch):
        return {"custom": float(epoch) * 10}


def test_a_modules_epoch_metrics_land_in_the_history(tmp_path):
    torch.manual_seed(0)
    module = CountingAutoencoder(50)
    trainer = Trainer(epochs=3, batch_size=32, lr=1e-2, seed=0, options={"progress": False})
    result = trainer.fit(module, CSRRows(_matrix()), history_path=tmp_path / "history.jsonl")
    assert [r["custom"] for r in result.history] == [0.0, 10.0, 20.0]
    lines = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [r["custom"] for r in lines] == [0.0, 10.0, 20.0]


def test_max_seconds_stops_before_an_epoch_that_would_overrun():
    _, unlimited = _fit(epochs=6)
    _, capped = _fit(epochs=6, max_seconds=1e-6)
    assert len(unlimited.history) == 6
    assert len(capped.history) == 1  # the first epoch always runs; the next would pass the budget
