"""Training datasets: each has `__len__` and `batch(indices)`, and builds tensors straight from sparse data.

`CSRRows` serves users' rows of a CSR matrix as a `SparseRows` batch (item indices, offsets and values, the
form `torch.nn.functional.embedding_bag` and a sparse multinomial likelihood take), so the user-item matrix
is never densified, not even one batch of it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch


class SparseRows(NamedTuple):
    """A batch of B sparse rows. Row b's entries are indices[offsets[b]:offsets[b+1]] with `values`;
    `rows` gives each entry's row (0..B-1), `users` each row's index in the source matrix."""

    indices: torch.Tensor  # (nnz,) int64 item indices
    offsets: torch.Tensor  # (B + 1,) int64
    values: torch.Tensor  # (nnz,) float32
    rows: torch.Tensor  # (nnz,) int64
    users: torch.Tensor  # (B,) int64

    @property
    def batch_size(self) -> int:
        return len(self.users)

    def to_dense(self, n_items: int) -> torch.Tensor:
        """(B, n_items) float32: for tests and small batches only."""
        out = torch.zeros(self.batch_size, n_items, device=self.values.device)
        out[self.rows, self.indices] = self.values
        return out


def sparse_rows(matrix: sp.csr_matrix, users: np.ndarray | None = None) -> SparseRows:
    """`matrix` (B, n_items) CSR → SparseRows; `users` labels the rows (default 0..B-1)."""
    m = matrix.tocsr()
    counts = np.diff(m.indptr)
    return SparseRows(
        torch.from_numpy(m.indices.astype(np.int64)),
        torch.from_numpy(m.indptr.astype(np.int64)),
        torch.from_numpy(m.data.astype(np.float32)),
        torch.from_numpy(np.repeat(np.arange(m.shape[0], dtype=np.int64), counts)),
        torch.from_numpy(np.arange(m.shape[0], dtype=np.int64) if users is None else np.asarray(users, np.int64)),
    )


class CSRRows:
    """Users' rows of a CSR matrix; rows with no entries are skipped (they carry no training signal)."""

    def __init__(self, matrix: sp.csr_matrix):
        self.matrix = matrix.tocsr().astype(np.float32)
        self.users = np.flatnonzero(np.diff(self.matrix.indptr) > 0)

    def __len__(self) -> int:
        return len(self.users)

    def batch(self, indices: np.ndarray) -> SparseRows:
        users = self.users[np.sort(indices)]
        return sparse_rows(self.matrix[users], users)
