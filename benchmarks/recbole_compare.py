"""RecBole 1.2.1's MultiVAE on the same Gowalla train.txt, for the issue 3 speed comparison (one training epoch).

RecBole runs in its own virtual environment (it needs numpy<2), so this file has two halves:

- `run_recbole(python, data_dir, epochs)` (called by benchmarks/vae_gowalla.py's `recbole` stage, in genrec's venv):
  writes RecBole's atomic files from train.txt into a scratch folder (never into the repository) and runs this
  file with RecBole's interpreter as a child process, which prints one JSON line;
- `worker(...)` (this file run by RecBole's interpreter): builds RecBole's dataset and MultiVAE at the
  architecture of ours and times `Trainer._train_epoch`, the call RecBole's own `fit` times and logs as an
  epoch's training time, with the process's peak RSS.

RecBole's parameter names: `mlp_hidden_size: [600]`, and `latent_dimension` is the width of the encoder's last
layer, which RecBole cuts in half into (mu, logvar); so latent_dimension 400 is a 200-dimensional code, the
600-200-600 network of Liang et al. and of our MultVAE. `train_batch_size: 500` is 500 users per update (its
UserDataLoader), as ours. RecBole's dataset holds exactly train.txt: the pre-split files (`benchmark_filename`)
give it train.txt as the training file and, as the validation and test files it insists on, the first lines of
train.txt (no evaluation is run, and no item outside train.txt enters its id map).

Setup (once): python3.11 -m venv /tmp/recbole-venv && /tmp/recbole-venv/bin/pip install torch==2.13.0
'recbole==1.2.1' 'numpy<2' 'pandas<3' 'setuptools<81'.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

SCRATCH = Path("/tmp/genrec-recbole")
RECBOLE_PYTHON = Path("/tmp/recbole-venv/bin/python")
CONFIG = {  # RecBole's names; the values are ours (benchmarks/vae_gowalla.py, MultVAE's defaults)
    "mlp_hidden_size": [600], "latent_dimension": 400, "dropout_prob": 0.5, "anneal_cap": 0.2,
    "total_anneal_steps": 200000, "train_batch_size": 500, "learning_rate": 0.001, "learner": "adam",
    "weight_decay": 0.0, "seed": 0, "reproducibility": True, "device": "cpu", "use_gpu": False, "worker": 0,
    "show_progress": False, "train_neg_sample_args": None, "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id",
    "load_col": {"inter": ["user_id", "item_id"]}, "benchmark_filename": ["train", "valid", "test"],
    "user_inter_num_interval": "[0,inf)", "item_inter_num_interval": "[0,inf)",
}


def write_atomic_files(train_txt: Path, out: Path, n_heldout_lines: int = 200) -> int:
    """RecBole's gowalla.{train,valid,test}.inter from LightGCN's train.txt ("user item item ..." per line);
    returns the number of training interactions."""
    out.mkdir(parents=True, exist_ok=True)
    pairs = []
    for line in train_txt.read_text().splitlines():
        user, *items = line.split()
        pairs += [f"{user}\t{item}" for item in items]
    header = "user_id:token\titem_id:token\n"
    (out / "gowalla.train.inter").write_text(header + "\n".join(pairs) + "\n")
    for name in ("valid", "test"):  # required by RecBole, never evaluated
        (out / f"gowalla.{name}.inter").write_text(header + "\n".join(pairs[:n_heldout_lines]) + "\n")
    return len(pairs)


def run_recbole(data_dir: Path, epochs: int = 2, python: Path = RECBOLE_PYTHON, timeout: float = 900) -> dict:
    """Write the atomic files, run `epochs` RecBole MultiVAE epochs in a child process; its JSON result."""
    if not python.exists():
        raise FileNotFoundError(f"{python} is missing: install RecBole 1.2.1 as this file's docstring says")
    n = write_atomic_files(data_dir / "train.txt", SCRATCH / "gowalla")
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    proc = subprocess.run([str(python), __file__, "--worker", "--epochs", str(epochs)], env=env, cwd=SCRATCH,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"RecBole worker failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result.update(train_interactions_written=n, recbole_python=str(python))
    return result


def worker(epochs: int) -> dict:
    """In RecBole's venv: `epochs` training epochs of RecBole's MultiVAE, each timed around _train_epoch."""
    import resource
    import time

    import recbole
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.general_recommender import MultiVAE
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    config = Config(model="MultiVAE", dataset="gowalla",
                    config_dict={**CONFIG, "data_path": str(SCRATCH), "checkpoint_dir": str(SCRATCH / "saved")})
    init_seed(config["seed"], config["reproducibility"])
    start = time.perf_counter()
    dataset = create_dataset(config)
    train_data, _, _ = data_preparation(config, dataset)
    load_seconds = time.perf_counter() - start
    model = MultiVAE(config, train_data.dataset).to(config["device"])
    trainer = Trainer(config, model)
    seconds, losses = [], []
    for epoch in range(epochs):
        start = time.perf_counter()
        losses.append(float(trainer._train_epoch(train_data, epoch)))
        seconds.append(time.perf_counter() - start)
    return {"seconds": seconds, "loss_sum": losses, "batches": len(train_data), "load_seconds": load_seconds,
            "n_users": dataset.user_num, "n_items": dataset.item_num, "interactions": len(train_data.dataset),
            "layers": [list(p.shape) for p in model.parameters() if p.dim() == 2],
            "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "torch_threads":
            torch.get_num_threads(), "recbole": recbole.__version__, "torch": torch.__version__}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", action="store_true", help="run RecBole's epochs (RecBole's interpreter only)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" /
                        "lightgcn-gowalla")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.epochs)))
    else:  # RecBole alone; benchmarks/vae_gowalla.py --stages speed recbole times ours beside it
        print(json.dumps(run_recbole(args.data, args.epochs)))


if __name__ == "__main__":
    sys.exit(main())
