"""A tiny item co-occurrence recommender for the serving tests: fast, deterministic, folds in any history.

Registered as "test-cooccurrence" from outside the package, as a user's own model would be, so the tests
also show that a server started with `imports=["tests.serving.cooccurrence"]` can load and retrain it.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from genrec.data.interactions import Histories, Interactions
from genrec.models.base import Recommender, register


@register("test-cooccurrence")
class Cooccurrence(Recommender):
    def __init__(self, shrink: float = 1.0):
        """score(u, j) = sum over the history's items i of co-counts(i, j) / (count(j) + shrink)."""
        self.shrink = shrink

    def fit(self, train: Interactions, validation=None) -> Cooccurrence:
        x = train.csr(binary=True)
        counts = np.asarray(x.sum(axis=0)).ravel()
        co = (x.T @ x).tocsr().astype(np.float32)
        co.setdiag(0)
        co.eliminate_zeros()
        self.similarity_ = (co @ sp.diags(1.0 / (counts + self.shrink))).tocsr().astype(np.float32)
        self.n_items_ = train.n_items
        return self

    def score(self, histories: Histories) -> np.ndarray:
        self._check_fitted(histories)
        return np.asarray((histories.binary() @ self.similarity_).todense(), dtype=np.float32)

    def _get_state(self):
        s = self.similarity_
        return {"indptr": s.indptr.astype(np.int64), "indices": s.indices.astype(np.int64), "data": s.data,
                "shape": np.array(s.shape, np.int64)}, {}

    def _set_state(self, arrays, meta):
        self.similarity_ = sp.csr_matrix((arrays["data"], arrays["indices"], arrays["indptr"]),
                                         shape=tuple(arrays["shape"]))
