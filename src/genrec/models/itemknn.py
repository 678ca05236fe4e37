"""ItemKNN: item-item cosine similarity with shrinkage, pruned to the k nearest neighbours of each item.

The neighbourhood model of Sarwar et al. (WWW 2001) and Deshpande & Karypis (TOIS 2004), in the form that
Dacrema et al. ("Are we really making much progress?", RecSys 2019) found hard to beat:

    S[i, j] = x_i . x_j / (|x_i|^(2 alpha) |x_j|^(2 (1 - alpha)) + shrink)       (x_i: column i of X)
    score(u) = h_u @ S                                                           (h_u: the user's history row)

alpha = 0.5 is the plain cosine; other values give Aiolli's asymmetric cosine (RecSys 2013). Column j of S keeps
only its k largest entries, so an item is scored from its own k nearest neighbours among the history items.
S is built a block of columns at a time from sparse co-occurrence products (only pairs of items that share a user
are ever touched), so memory stays bounded on 41k items (S itself holds at most k * n_items entries).

Feature weighting (Dacrema et al.'s ItemKNNCF, after the IR weightings): before the similarity, X is reweighted as
a term-document matrix with items as documents and users as terms,

    tfidf:  X[u, i] -> sqrt(x) * idf_u                                          idf_u = log(n_items / (1 + n_u))
    bm25:   X[u, i] -> x (K1 + 1) / (K1 L_i + x) * idf_u      L_i = 1 - B + B len_i / mean(len),  K1 = 1.2, B = 0.75

(n_u: the user's number of items, len_i: column i's sum). At scoring the history row gets the same item-side
weight (sqrt(x), or the BM25 saturation with the fitted L_i); the user's idf is one positive number per row and is
left out there.

Prediction: "sum" is h_u @ S as above (Dacrema et al.); "average" divides every column of S by its sum, so an item's
score is the similarity-weighted average of its neighbours' history values (Sarwar et al.); "average_bias" centres
that average on the item means m (Ma et al., SIGIR 2007), score(u)_j = sum_i S[i, j] (h_u[i] - m_i) + m_j, as in the
ItemKNN that BARS reports on the LightGCN splits.

Default k=100: the middle of the range Dacrema et al. searched (5..1000) and what their tuned ItemKNN picks on
the larger implicit data sets; shrink=10 damps similarities that rest on very few common users.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from genrec.data.interactions import Histories, Interactions
from genrec.models.base import Recommender, register

BLOCK_FLOATS = 1 << 25  # n_items x block columns per co-occurrence product (bounds its size)
FEATURE_WEIGHTINGS = ("none", "tfidf", "bm25")
PREDICTIONS = ("sum", "average", "average_bias")
BM25_K1, BM25_B = 1.2, 0.75  # Okapi BM25 constants (Robertson et al.), as in Dacrema et al.'s code


@register("itemknn")
class ItemKNN(Recommender):
    def __init__(self, k: int = 100, shrink: float = 10.0, normalize: bool = True, alpha: float = 0.5,
                 binary: bool = True, feature_weighting: str = "none", prediction: str = "sum"):
        """k: neighbours kept per item; shrink: added to the cosine denominator; normalize: divide by the norms
        (False: raw co-occurrence counts, still shrunk); alpha: asymmetric cosine exponent (0.5 = cosine);
        binary: use 1.0 for every interaction instead of its value; feature_weighting: 'none', 'tfidf' or 'bm25'
        applied to the user-item matrix before the similarity; prediction: 'sum', 'average' or 'average_bias'
        (see the module docstring)."""
        self.k = k
        self.shrink = shrink
        self.normalize = normalize
        self.alpha = alpha
        self.binary = binary
        self.feature_weighting = feature_weighting
        self.prediction = prediction

    # fitting ----------------------------------------------------------------------------------------------------
    def fit(self, train: Interactions, validation=None) -> ItemKNN:
        self._check_hyperparameters()
        x = train.csr(binary=self.binary)
        self.length_norm_ = bm25_length_norm(x)
        weighted = weigh_features(x, self.feature_weighting, self.length_norm_)
        s = item_similarity(weighted, self.k, self.shrink, self.normalize, self.alpha)
        self.item_bias_ = np.zeros(train.n_items, np.float32)
        if self.prediction != "sum":
            sums = np.asarray(s.sum(axis=0), dtype=np.float64).ravel()
            s = s @ sp.diags((1.0 / np.where(sums > 0, sums, 1.0)).astype(np.float32))  # columns sum to 1
        if self.prediction == "average_bias":
            means = np.asarray(self._profile(x).mean(axis=0), dtype=np.float64).ravel()  # m: (n_items,)
            self.item_bias_ = (means - s.T @ means).astype(np.float32)  # m_j - sum_i S[i, j] m_i
        self.similarity_ = sp.csr_matrix(s, dtype=np.float32)
        self.n_items_ = train.n_items
        return self

    def _check_hyperparameters(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be at least 1, got {self.k}")
        if self.shrink < 0:
            raise ValueError(f"shrink must be >= 0, got {self.shrink}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.feature_weighting not in FEATURE_WEIGHTINGS:
            raise ValueError(f"feature_weighting must be one of {FEATURE_WEIGHTINGS}, got {self.feature_weighting!r}")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {self.prediction!r}")

    # scoring ----------------------------------------------------------------------------------------------------
    def _profile(self, h: sp.csr_matrix) -> sp.csr_matrix:
        """The history rows as the model reads them: the item-side part of the feature weighting."""
        return weigh_terms(sp.csr_matrix(h, dtype=np.float32), self.feature_weighting, self.length_norm_)

    def score(self, histories: Histories) -> np.ndarray:
        """(n_users, n_items) float32: the (weighted) history row times the pruned similarity matrix, plus the item
        bias for prediction='average_bias'."""
        self._check_fitted(histories)
        h = histories.binary() if self.binary else histories.matrix
        return (self._profile(h) @ self.similarity_).toarray() + self.item_bias_

    # persistence ------------------------------------------------------------------------------------------------
    def _get_state(self):
        s = self.similarity_
        return {"indptr": s.indptr.astype(np.int64), "indices": s.indices.astype(np.int32), "data": s.data,
                "length_norm": self.length_norm_, "item_bias": self.item_bias_}, {}

    def _set_state(self, arrays, meta):
        n = len(arrays["indptr"]) - 1
        self.similarity_ = sp.csr_matrix((arrays["data"], arrays["indices"], arrays["indptr"]), shape=(n, n))
        # bundles written before feature weighting and item bias existed hold neither: both were neutral then
        self.length_norm_ = np.asarray(arrays.get("length_norm", np.ones(n)), dtype=np.float32)
        self.item_bias_ = np.asarray(arrays.get("item_bias", np.zeros(n)), dtype=np.float32)
        self.n_items_ = n


# feature weighting --------------------------------------------------------------------------------------------
def bm25_length_norm(x: sp.csr_matrix) -> np.ndarray:
    """(n_items,) float32 L_i = 1 - B + B len_i / mean(len), len_i the sum of column i of x (users x items)."""
    lengths = np.asarray(x.sum(axis=0), dtype=np.float64).ravel()
    mean = lengths.mean() if lengths.size and lengths.mean() > 0 else 1.0
    return (1.0 - BM25_B + BM25_B * lengths / mean).astype(np.float32)


def weigh_terms(x: sp.csr_matrix, scheme: str, length_norm: np.ndarray) -> sp.csr_matrix:
    """x (users x items, CSR) with every stored value v in column i replaced by its item-side weight: v ('none'),
    sqrt(v) ('tfidf') or v (K1 + 1) / (K1 L_i + v) ('bm25')."""
    if scheme == "none":
        return x
    v = x.data.astype(np.float64)
    if scheme == "tfidf":
        w = np.sqrt(v)
    else:
        w = v * (BM25_K1 + 1.0) / (BM25_K1 * length_norm[x.indices] + v)
    return sp.csr_matrix((w.astype(np.float32), x.indices, x.indptr), shape=x.shape)


def weigh_features(x: sp.csr_matrix, scheme: str, length_norm: np.ndarray) -> sp.csr_matrix:
    """The user-item matrix (CSR) reweighted for the similarity: item-side weight times the user's idf,
    idf_u = log(n_items / (1 + n_u)); unchanged for 'none'."""
    if scheme == "none":
        return x
    x = sp.csr_matrix(x, dtype=np.float32)
    idf = np.log(x.shape[1] / (1.0 + np.diff(x.indptr)))  # (n_users,)
    return sp.diags(idf.astype(np.float32)) @ weigh_terms(x, scheme, length_norm)


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
