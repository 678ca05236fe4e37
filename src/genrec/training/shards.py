"""Out-of-core training: users' rows streamed from Parquet shards, one shard in memory at a time.

`UserShards` is a Trainer dataset (`__len__`, `batch`, `plan_batches`) over a folder of Parquet files, each
holding whole users (the `train/` folder `genrec.spark.prepare.prepare` writes: columns user, item, value,
sorted by user). Example i is the i-th user in shard order. Each epoch the Trainer's seeded permutation picks
the order in which shards are visited and, inside a shard, the order of its users; batches never cross a
shard, so an epoch reads every shard once and memory holds the model, one shard's CSR rows and a batch, never
the whole data. Under DDP every rank reads the same shard and takes its share of each batch.

`fit_streaming` trains a bag-of-items torch model (Mult-VAE, Mult-DAE, RecVAE) on such a dataset.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import scipy.sparse as sp

from genrec.data.interactions import DataError
from genrec.training.data import SparseRows, sparse_rows


class UserShards:
    """Users' item rows from Parquet shards (columns `user`, `item` and, unless binary, `value`).

    n_items: the item count (indices 0..n_items-1); binary: every value 1.0 (Mult-VAE's clicks)."""

    def __init__(self, paths: list[str | Path], n_items: int, binary: bool = True):
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise DataError("UserShards needs at least one Parquet shard")
        self.n_items = int(n_items)
        self.binary = binary
        self.shard_users = [self._users(p) for p in self.paths]  # sorted user ids of each shard
        sizes = np.array([len(u) for u in self.shard_users], np.int64)
        self.starts = np.concatenate([[0], np.cumsum(sizes)])
        self._loaded: tuple[int, sp.csr_matrix] | None = None
        self.shards_read = 0  # how many times a shard was read (once per shard per epoch when batches are planned)

    @classmethod
    def from_prepared(cls, folder: str | Path, binary: bool = True) -> UserShards:
        """The training shards of a `genrec.spark.prepare.prepare` folder."""
        import json

        from genrec.spark.prepare import shard_paths

        meta = json.loads((Path(folder) / "meta.json").read_text())
        return cls(shard_paths(folder), meta["n_items"], binary)

    @staticmethod
    def _users(path: Path) -> np.ndarray:
        column = pq.read_table(path, columns=["user"]).column("user").to_numpy()
        if len(column) and np.any(np.diff(column) < 0):
            raise DataError(f"{path}: rows are not sorted by user")
        return np.unique(column)

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def n_shards(self) -> int:
        return len(self.paths)

    def shard_of(self, indices: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.starts, indices, side="right") - 1

    def plan_batches(self, order: np.ndarray, batch_size: int) -> list[np.ndarray]:
        """Regroup the epoch's permutation shard by shard: shards in the order of their first example in
        `order`, examples inside a shard in `order`'s order, batches of `batch_size` inside one shard."""
        shard = self.shard_of(order)
        first = np.full(self.n_shards, len(order), np.int64)
        np.minimum.at(first, shard, np.arange(len(order)))
        visit = np.argsort(np.argsort(first, kind="stable"), kind="stable")
        regrouped = order[np.argsort(visit[shard], kind="stable")]
        sizes = np.bincount(shard, minlength=self.n_shards)[np.argsort(first, kind="stable")]
        batches = []
        for start, end in zip(np.cumsum(sizes) - sizes, np.cumsum(sizes)):
            batches += [regrouped[s : min(s + batch_size, end)] for s in range(start, end, batch_size)]
        return batches

    def _shard_rows(self, s: int) -> sp.csr_matrix:
        """(n users of shard s, n_items) CSR, one shard kept in memory."""
        if self._loaded is None or self._loaded[0] != s:
            self._loaded = None  # release the previous shard before reading the next
            columns = ["user", "item"] if self.binary else ["user", "item", "value"]
            table = pq.read_table(self.paths[s], columns=columns)
            users = np.searchsorted(self.shard_users[s], table.column("user").to_numpy())
            items = table.column("item").to_numpy().astype(np.int32)
            values = (np.ones(len(items), np.float32) if self.binary
                      else table.column("value").to_numpy().astype(np.float32))
            rows = sp.csr_matrix((values, (users, items)), shape=(len(self.shard_users[s]), self.n_items))
            if self.binary:
                rows.data[:] = 1.0  # a repeated event is one click
            self._loaded = (s, rows)
            self.shards_read += 1
        return self._loaded[1]

    def batch(self, indices: np.ndarray) -> SparseRows:
        """The rows of examples `indices` (from one shard when planned; several shards are read in turn)."""
        indices = np.sort(np.asarray(indices))
        shard = self.shard_of(indices)
        parts = [self._shard_rows(s)[indices[shard == s] - self.starts[s]] for s in np.unique(shard)]
        return sparse_rows(sp.vstack(parts, format="csr") if len(parts) > 1 else parts[0], indices)


def fit_streaming(model, shards: UserShards, validation=None, history_path: str | Path | None = None):
    """Train a torch bag-of-items recommender (Mult-VAE, Mult-DAE, RecVAE) on streamed shards instead of an
    in-memory `Interactions`; validation (a Holdout) drives model selection as in `fit`. Returns the model."""
    return model.fit_dataset(shards, shards.n_items, validation, history_path=history_path)
