"""Matrix factorisation baselines through the `implicit` library: iALS and BPR.

IALS (Hu, Koren & Volinsky, ICDM 2008) minimises sum_{u,i} c_ui (p_ui - x_u . y_i)^2 + reg (|X|^2 + |Y|^2)
with p_ui = 1 for interactions (else 0) and confidence c_ui = 1 + alpha * r_ui (else 1); implicit's solver
takes the confidences directly. Fold-in is exact: with the item factors fixed, a user's factors are the
least-squares solution x_u = (Y^T C_u Y + reg I)^-1 Y^T C_u p_u, which implicit's `recalculate_user` solves
by Cholesky in compiled code for a whole batch of users.

BPR (Rendle et al., UAI 2009) learns the same kind of factors (plus an item bias) by SGD on sampled
(user, positive, negative) triples. It has no closed-form user solve, so its fold-in is a linear map fitted
once after training: a user's factors are predicted from the mean factor of their history items,
x_u ~ [mean_{i in h_u} y_i, 1] W, with W the least-squares fit of the trained users' factors
(a (factors + 1, factors) matrix; a ridge of 1e-4 times the mean diagonal only keeps the solve well posed).
A training user folded in lands close to their trained factors.

Both are deterministic for a given `seed`: the ALS solves of different users do not interact, and BPR runs
on one thread by default (more threads update the factors in a racy, non-reproducible order).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from implicit.cpu.bpr import BayesianPersonalizedRanking
from threadpoolctl import threadpool_limits

from genrec.data.interactions import Histories, Interactions
from genrec.models.base import Recommender, register

FOLD_IN_RIDGE = 1e-4  # BPR fold-in map: ridge relative to the mean diagonal of the normal equations


def _check_common(factors: int, iterations: int, regularization: float) -> None:
    if factors < 1:
        raise ValueError(f"factors must be at least 1, got {factors}")
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}")
    if regularization < 0:
        raise ValueError(f"regularization must be >= 0, got {regularization}")


@register("ials")
class IALS(Recommender):
    def __init__(self, factors: int = 100, regularization: float = 0.01, alpha: float = 40.0,
                 iterations: int = 15, seed: int = 0, num_threads: int = 1):
        """factors: latent dimension; regularization: L2 weight on both factor matrices; alpha: confidence
        slope, c_ui = 1 + alpha * r_ui (Hu et al. use 40); iterations: ALS sweeps; num_threads: 0 = all cores
        (the result does not depend on it)."""
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.seed = seed
        self.num_threads = num_threads

    def fit(self, train: Interactions, validation=None) -> IALS:
        _check_common(self.factors, self.iterations, self.regularization)
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")
        with threadpool_limits(1, "blas"):  # implicit parallelises over users itself
            als = self._solver()
            als.fit(self._confidence(train.csr()), show_progress=False)
        self.user_factors_ = np.asarray(als.user_factors, dtype=np.float32)
        self.item_factors_ = np.asarray(als.item_factors, dtype=np.float32)
        self.n_items_ = train.n_items
        return self

    def _solver(self) -> AlternatingLeastSquares:
        return AlternatingLeastSquares(factors=self.factors, regularization=self.regularization, alpha=1.0,
                                       iterations=self.iterations, num_threads=self.num_threads,
                                       random_state=self.seed)

    def _confidence(self, ratings: sp.csr_matrix) -> sp.csr_matrix:
        """c_ui = 1 + alpha * r_ui on the interactions, as implicit's solver expects them (float32 CSR)."""
        c = sp.csr_matrix(ratings, dtype=np.float32, copy=True)
        c.data = 1.0 + np.float32(self.alpha) * c.data
        return c

    def fold_in(self, histories: Histories) -> np.ndarray:
        """(n_users, factors) float32: each user's exact least-squares factors given the item factors."""
        self._check_fitted(histories)
        als = self._solver()
        als.item_factors = self.item_factors_
        with threadpool_limits(1, "blas"):
            users = als.recalculate_user(np.arange(histories.n_users), self._confidence(histories.matrix))
        return np.asarray(users, dtype=np.float32).reshape(histories.n_users, self.factors)

    def score(self, histories: Histories) -> np.ndarray:
        """(n_users, n_items) float32: folded-in user factors times the item factors."""
        return self.fold_in(histories) @ self.item_factors_.T

    def _get_state(self):
        return {"user_factors": self.user_factors_, "item_factors": self.item_factors_}, {}

    def _set_state(self, arrays, meta):
        self.user_factors_ = arrays["user_factors"]
        self.item_factors_ = arrays["item_factors"]


@register("bpr")
class BPR(Recommender):
    def __init__(self, factors: int = 100, learning_rate: float = 0.01, regularization: float = 0.01,
                 iterations: int = 100, seed: int = 0, num_threads: int = 1):
        """factors: latent dimension (an item bias comes on top); learning_rate, regularization: SGD step and
        L2 weight; iterations: epochs over the interactions; num_threads: 1 keeps training reproducible
        (0 = all cores, faster but not deterministic)."""
        self.factors = factors
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.iterations = iterations
        self.seed = seed
        self.num_threads = num_threads

    def fit(self, train: Interactions, validation=None) -> BPR:
        _check_common(self.factors, self.iterations, self.regularization)
        with threadpool_limits(1, "blas"):
            bpr = BayesianPersonalizedRanking(factors=self.factors, learning_rate=self.learning_rate,
                                              regularization=self.regularization, iterations=self.iterations,
                                              num_threads=self.num_threads, random_state=self.seed)
            bpr.fit(train.csr(binary=True), show_progress=False)
        # implicit appends the item bias to the item factors and a constant 1 to the user factors
        self.item_factors_ = np.asarray(bpr.item_factors[:, :-1], dtype=np.float32)
        self.item_bias_ = np.asarray(bpr.item_factors[:, -1], dtype=np.float32)
        self.user_factors_ = np.asarray(bpr.user_factors[:, :-1], dtype=np.float32)
        self.fold_in_map_ = self._fit_fold_in_map(train.csr(binary=True))
        self.n_items_ = train.n_items
        return self

    def _mean_item_factor(self, x: sp.csr_matrix) -> np.ndarray:
        """(n_users, factors + 1): the mean factor of each user's items, and a constant 1 (0 rows: zeros)."""
        counts = np.maximum(np.diff(x.indptr), 1).astype(np.float32)
        mean = (x.astype(np.float32) @ self.item_factors_) / counts[:, None]
        return np.hstack([mean, np.ones((x.shape[0], 1), np.float32)])

    def _fit_fold_in_map(self, x: sp.csr_matrix) -> np.ndarray:
        """W minimising |M W - U|^2 over the training users (M: their mean item factors and a 1)."""
        active = np.diff(x.indptr) > 0
        m = self._mean_item_factor(x[active]).astype(np.float64)
        u = self.user_factors_[active].astype(np.float64)
        gram = m.T @ m
        gram += FOLD_IN_RIDGE * np.trace(gram) / len(gram) * np.eye(len(gram))
        return np.linalg.solve(gram, m.T @ u).astype(np.float32)

    def fold_in(self, histories: Histories) -> np.ndarray:
        """(n_users, factors) float32 user factors predicted from the history (see the module docstring)."""
        self._check_fitted(histories)
        return self._mean_item_factor(histories.binary()) @ self.fold_in_map_

    def score(self, histories: Histories) -> np.ndarray:
        """(n_users, n_items) float32: folded-in user factors times the item factors, plus the item bias."""
        return self.fold_in(histories) @ self.item_factors_.T + self.item_bias_

    def _get_state(self):
        return {"user_factors": self.user_factors_, "item_factors": self.item_factors_,
                "item_bias": self.item_bias_, "fold_in_map": self.fold_in_map_}, {}

    def _set_state(self, arrays, meta):
        for name in ("user_factors", "item_factors", "item_bias", "fold_in_map"):
            setattr(self, f"{name}_", arrays[name])
