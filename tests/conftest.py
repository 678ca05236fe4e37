"""Shared fixtures: tiny hand-checkable tables and a small structured data set with real signal."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from genrec.data.interactions import Interactions

os.environ.setdefault("OMP_NUM_THREADS", "1")
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_data(name: str) -> Path:
    """Path to a benchmark folder in ../shared/data, or skip the test when it is absent."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} is not present")
    return path


def block_interactions(n_users: int = 120, n_items: int = 60, n_groups: int = 4, p_in: float = 0.35,
                       p_out: float = 0.02, seed: int = 0) -> Interactions:
    """Users and items in `n_groups` taste groups: a user takes items of their group with p_in, others with
    p_out. Timestamps increase with the item index inside a group, so sequences have an order to learn."""
    rng = np.random.default_rng(seed)
    ug = rng.integers(0, n_groups, n_users)
    ig = np.arange(n_items) % n_groups
    p = np.where(ug[:, None] == ig[None, :], p_in, p_out)
    u, i = np.nonzero(rng.random((n_users, n_items)) < p)
    t = i * 10 + rng.integers(0, 5, len(i))
    frame = pd.DataFrame({"user": u, "item": i, "rating": rng.integers(1, 6, len(i)), "ts": t})
    attrs = pd.DataFrame({"category": [f"c{g}" for g in ig]}, index=np.arange(n_items))
    return Interactions.from_frame(frame, "user", "item", "rating", "ts", item_attributes=attrs,
                                   source="block_interactions")


@pytest.fixture(scope="session")
def blocks() -> Interactions:
    return block_interactions()
