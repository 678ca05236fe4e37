"""ItemKNN: item-item cosine similarity with shrinkage, pruned to the k nearest neighbours of each item.

The neighbourhood model of Sarwar et al. (WWW 2001) and Deshpande & Karypis (TOIS 2004), in the form that
Dacrema et al. ("Are we really making much progress?", RecSys 2019) found hard to beat:

    S[i, j] = x_i . x_j / (|x_i|^(2 alpha) |x_j|^(2 (1 - alpha)) + shrink)       (x_i: column i of X)
    score(u) = h_u @ S                                                           (h_u: the user's history row)

alpha = 0.5 is the plain cosine; other values give Aiolli's asymmetric cosine (RecSys 2013). Column j of S keeps
only its k largest entries, so an item is scored from its own k nearest neighbours among the history items.
S is built a block of columns at a time from sparse co-occurrence products (only pairs of items that share a user
are ever touched), so memory stays bounded on 41k items (S itself holds at most k * n_items entries).

Default k=100: the middle of the range Dacrema et al. searched (5..1000) and what their tuned ItemKNN picks on
the larger implicit data sets; shrink=10 damps similarities that rest on very few common users.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from genrec.data.interactions import Histories, Interactions
from genrec.models.base import Recommender, register

BLOCK_FLOATS = 1 << 25  # n_items x block columns per co-occurrence product (bounds its size)


@register("itemknn")
class ItemKNN(Recommender):
    def __init__(self, k: int = 100, shrink: float = 10.0, normalize: bool = True, alpha: float = 0.5,
                 binary: bool = True):
        """k: neighbours kept per item; shrink: added to the cosine denominator; normalize: divide by the norms
        (False: raw co-occurrence counts, still shrunk); alpha: asymmetric cosine exponent (0.5 = cosine);
        binary: use 1.0 for every interaction instead of its value."""
        self.k = k
        self.shrink = shrink
        self.normalize = normalize
        self.alpha = alpha
        self.binary = binary

    # fitting ----------------------------------------------------------------------------------------------------
    def fit(self, train: Interactions, validation=None) -> ItemKNN:
        if self.k < 1:
            raise ValueError(f"k must be at least 1, got {self.k}")
        if self.shrink < 0:
            raise ValueError(f"shrink must be >= 0, got {self.shrink}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        self.similarity_ = item_similarity(train.csr(binary=self.binary), self.k, self.shrink, self.normalize,
                                           self.alpha)
        self.n_items_ = train.n_items
        return self

    # scoring ----------------------------------------------------------------------------------------------------
    def score(self, histories: Histories) -> np.ndarray:
        """(n_users, n_items) float32: the history row times the pruned similarity matrix."""
        self._check_fitted(histories)
        h = histories.binary() if self.binary else histories.matrix
        return (h.astype(np.float32) @ self.similarity_).toarray()

    # persistence ------------------------------------------------------------------------------------------------
    def _get_state(self):
        s = self.similarity_
        return {"indptr": s.indptr.astype(np.int64), "indices": s.indices.astype(np.int32), "data": s.data}, {}

    def _set_state(self, arrays, meta):
        n = len(arrays["indptr"]) - 1
        self.similarity_ = sp.csr_matrix((arrays["data"], arrays["indices"], arrays["indptr"]), shape=(n, n))


def item_similarity(x: sp.csr_matrix, k: int, shrink: float, normalize: bool = True,
                    alpha: float = 0.5) -> sp.csr_matrix:
    """(n_items, n_items) float32 CSR S with S[i, j] as in the module docstring; the diagonal is zero and
    column j keeps its k largest positive entries (ties: lower i first). x: (n_users, n_items) user-item matrix.
    Only co-occurring pairs are ever touched: each block of columns is a sparse product."""
    x = sp.csr_matrix(x, dtype=np.float32)
    n = x.shape[1]
    squares = np.asarray(x.multiply(x).sum(axis=0), dtype=np.float64).ravel()
    left = (squares**alpha if normalize else np.ones(n)).astype(np.float32)
    right = (squares ** (1.0 - alpha) if normalize else np.ones(n)).astype(np.float32)
    xt = x.T.tocsr()
    xc = x.tocsc()
    block = max(1, BLOCK_FLOATS // max(n, 1))
    rows, cols, vals = [], [], []
    for start in range(0, n, block):
        stop = min(start + block, n)
        dots = (xt @ xc[:, start:stop]).tocoo()  # (n, b) sparse: co-occurrence of every item with the block's
        i, j = dots.row.astype(np.int64), dots.col.astype(np.int64) + start
        sim = dots.data / (left[i] * right[j] + np.float32(shrink))
        keep = (i != j) & (sim > 0)
        r, c, v = _top_k_per_column(i[keep], j[keep], sim[keep].astype(np.float32), k)
        rows.append(r)
        cols.append(c)
        vals.append(v)
    s = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    s.sort_indices()
    return s


def _top_k_per_column(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray,
                      k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (row, column, value) triples among the given ones that are the k largest values of their column."""
    order = np.lexsort((rows, -vals, cols))  # by column, then value descending, then row
    rows, cols, vals = rows[order], cols[order], vals[order]
    rank = np.arange(len(cols)) - np.searchsorted(cols, cols)  # position within the column's run
    keep = rank < k
    return rows[keep], cols[keep], vals[keep]
