"""A small but complete run folder (synthetic data; popularity, EASE and a Mult-VAE), written once per session
by the experiment runner itself, so the report is tested on the layout runs really have."""

from __future__ import annotations

from pathlib import Path

import pytest

import genrec.models.multvae  # noqa: F401  (registers multvae/multdae)
from genrec.config import config_from_dict
from genrec.experiment import run_experiment

TINY = {
    "name": "tiny",
    "seed": 0,
    "data": {"format": "synthetic", "synthetic": {"n_users": 300, "n_items": 200}},
    "clean": {"min_value": 4, "binarize": True},
    "split": {"protocol": "strong_generalization", "n_heldout": 0.1, "fold_in": 0.8},
    "models": {
        "popularity": {"model": "popularity"},
        "ease": {"model": "ease"},
        "multvae": {"model": "multvae", "params": {"epochs": 3, "hidden_dims": [32, 8], "batch_size": 64}},
    },
    "evaluation": {"ks": [10, 20]},
}


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tiny"
    run_experiment(config_from_dict(TINY), out, progress=False)
    return out
