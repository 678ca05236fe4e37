"""Distributed data parallel training: the same config trained by 2 processes under torchrun (gloo on CPU, bound
to 127.0.0.1) makes the updates one process makes, reaches its validation NDCG while each rank scores half of the
validation users, and only rank 0 writes files.

This file is also the training script torchrun runs: `python -m torch.distributed.run ... -m
tests.training.test_ddp DATA OUT`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.conftest import shared_data

REPO = Path(__file__).resolve().parents[2]
VAE = dict(hidden_dims=(100, 30), epochs=20, batch_size=64, lr=3e-3, seed=0)
DAE = dict(hidden_dims=(100,), dropout=0.0, epochs=4, batch_size=64, lr=5e-3, seed=0)  # no randomness in training


def train(data_path: str, out: str) -> None:
    """Fit a small Mult-VAE, and a Mult-DAE without dropout, on ML-100K (ratings >= 4, 150 validation users);
    rank 0 writes both histories, every rank the number of users each of its validations scored."""
    import importlib

    from genrec.data.movielens import load_movielens
    from genrec.data.splits import split_strong_generalization
    from genrec.distributed import is_main_process, rank, shutdown, world_size
    from genrec.models.multvae import MultDAE, MultVAE

    evaluation = importlib.import_module("genrec.evaluation.evaluate")  # the module (the package exports the function)
    scored, evaluate = [], evaluation.evaluate

    def counting_evaluate(model, holdout, *args, **kwargs):
        scored.append(len(holdout))
        return evaluate(model, holdout, *args, **kwargs)

    evaluation.evaluate = counting_evaluate  # the validator looks it up when the fit starts
    data = load_movielens(data_path, min_rating=4)
    split = split_strong_generalization(data, n_heldout=150, seed=0)
    vae = MultVAE(**VAE, train_options={"progress": False, "checkpoint_dir": out}).fit(split.train, split.validation)
    dae = MultDAE(**DAE, train_options={"progress": False}).fit(split.train, split.validation)
    Path(out, f"scored_rank{rank()}.json").write_text(json.dumps(scored))
    if is_main_process():
        Path(out, "result.json").write_text(json.dumps({"world_size": world_size(), "vae": vae.history_,
                                                        "dae": dae.history_}))
    shutdown()


def _run(tmp_path: Path, nproc: int) -> dict:
    data = str(shared_data("movielens-100k"))
    out = tmp_path / f"nproc{nproc}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "PYTHONPATH": str(REPO)}
    if nproc == 1:  # the same script, one plain process: no torchrun, no process group
        cmd = [sys.executable, "-m", "tests.training.test_ddp", data, str(out)]
    else:
        from genrec.distributed import free_port

        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--nnodes=1",
               "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "tests.training.test_ddp", data,
               str(out)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "result.json").read_text())


def test_two_processes_reach_the_validation_ndcg_of_one(tmp_path):
    one = _run(tmp_path, 1)
    two = _run(tmp_path, 2)
    assert (one["world_size"], two["world_size"]) == (1, 2)
    # the global batch is split over the ranks: both runs make the same number of updates ...
    assert [r["step"] for r in one["vae"]] == [r["step"] for r in two["vae"]]
    # ... and, with no randomness in training (DAE, no dropout), the same updates: same losses, same NDCG
    for a, b in zip(one["dae"], two["dae"]):
        assert np.isclose(a["loss"], b["loss"], rtol=1e-4) and abs(a["val_ndcg@100"] - b["val_ndcg@100"]) < 1e-4
    # the Mult-VAE draws other dropout and sampling noise on rank 1, yet reaches the same validation NDCG (that of
    # the epoch the Trainer keeps)
    ndcg_one = [r["val_ndcg@100"] for r in one["vae"]]
    ndcg_two = [r["val_ndcg@100"] for r in two["vae"]]
    assert max(ndcg_one) > ndcg_one[0] + 0.1  # it learned something
    assert abs(max(ndcg_one) - max(ndcg_two)) <= 0.005, (ndcg_one, ndcg_two)
    # each validation scored every user once: all 150 in one process, a disjoint half on each of two ranks
    n_validations = VAE["epochs"] + DAE["epochs"]
    assert json.loads((tmp_path / "nproc1" / "scored_rank0.json").read_text()) == [150] * n_validations
    for r in (0, 1):
        assert json.loads((tmp_path / "nproc2" / f"scored_rank{r}.json").read_text()) == [75] * n_validations
    # rank 0 alone wrote the checkpoint's history
    lines = (tmp_path / "nproc2" / "history.jsonl").read_text().splitlines()
    assert len(lines) == VAE["epochs"]
    assert np.isclose(json.loads(lines[-1])["val_ndcg@100"], ndcg_two[-1])


if __name__ == "__main__":
    train(sys.argv[1], sys.argv[2])
