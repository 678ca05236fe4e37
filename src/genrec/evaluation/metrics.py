"""Top-K metrics, vectorised over users.

Everything starts from `hit_matrix(topk, targets)`: a (n_users, K) bool array, True where the item at rank r
is relevant. Per-user metrics return (n_users,) float64 arrays; the evaluator averages them.

Two Recall definitions are in use and they differ, so both are here under their own names:
- `recall_at_k`:      hits@K / |relevant|                 (NGCF, LightGCN, most graph papers)
- `recall_liang_at_k`: hits@K / min(K, |relevant|)        (Liang et al. 2018, Mult-VAE; "truncated recall")
NDCG@K uses binary gains, log2(rank + 1) discounts and the ideal DCG of min(K, |relevant|) hits (both
LightGCN and Mult-VAE use this). HR@K is 1 if any hit. MRR@K is 1/rank of the first hit within K.
MAP@K averages precision at each hit over min(K, |relevant|).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def hit_matrix(topk: np.ndarray, targets: sp.csr_matrix) -> np.ndarray:
    """(n_users, K) bool: topk[u, r] is in user u's targets. -1 (padding) is never a hit."""
    n, k = topk.shape
    t = targets.tocsr()
    t.sort_indices()
    n_items = t.shape[1]
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(t.indptr))
    keys = rows * n_items + t.indices.astype(np.int64)  # sorted, since rows ascend and indices sort within rows
    query = np.arange(n, dtype=np.int64)[:, None] * n_items + topk.astype(np.int64)
    pos = np.searchsorted(keys, query.ravel())
    pos = np.minimum(pos, max(len(keys) - 1, 0))
    hits = (keys[pos] == query.ravel()) if len(keys) else np.zeros(query.size, bool)
    return hits.reshape(n, k) & (topk >= 0)


def n_relevant(targets: sp.csr_matrix) -> np.ndarray:
    return np.diff(targets.tocsr().indptr).astype(np.float64)


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros_like(a, dtype=np.float64)
    np.divide(a, b, out=out, where=b > 0)
    return out


def recall_at_k(hits: np.ndarray, n_rel: np.ndarray, k: int) -> np.ndarray:
    """hits@K / |relevant| (LightGCN definition)."""
    return _safe_div(hits[:, :k].sum(1).astype(np.float64), n_rel)


def recall_liang_at_k(hits: np.ndarray, n_rel: np.ndarray, k: int) -> np.ndarray:
    """hits@K / min(K, |relevant|) (Liang et al. 2018 definition)."""
    return _safe_div(hits[:, :k].sum(1).astype(np.float64), np.minimum(k, n_rel))


def precision_at_k(hits: np.ndarray, n_rel: np.ndarray, k: int) -> np.ndarray:
    return hits[:, :k].sum(1) / float(k)


def hr_at_k(hits: np.ndarray, n_rel: np.ndarray, k: int) -> np.ndarray:
    return hits[:, :k].any(1).astype(np.float64)


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def ndcg_at_k(hits: np.ndarray, n_rel: np.ndarray, k: int) -> np.ndarray:
    disc = _discounts(k)
    dcg = (hits[:, :k] * disc[: hits[:, :k].shape[1]]).sum(1)
    ideal_cum = np.concatenate([[0.0], np.cumsum(disc)])
    idcg = ideal_cum[np.minimum(k, n_rel).astype(np.int64)]
    return _safe_div(dcg, idcg)


def mrr_at_k(hits: np.ndarray, n_rel: np.ndarray, k: int) -> np.ndarray:
    h = hits[:, :k]
    first = h.argmax(1)
    return np.where(h.any(1), 1.0 / (first + 1.0), 0.0)


def map_at_k(hits: np.ndarray, n_rel: np.ndarray, k: int) -> np.ndarray:
    h = hits[:, :k].astype(np.float64)
    prec = np.cumsum(h, 1) / np.arange(1, h.shape[1] + 1)
    return _safe_div((prec * h).sum(1), np.minimum(k, n_rel))


RANKING_METRICS = {
    "recall": recall_at_k,
    "recall_liang": recall_liang_at_k,
    "ndcg": ndcg_at_k,
    "hr": hr_at_k,
    "mrr": mrr_at_k,
    "map": map_at_k,
    "precision": precision_at_k,
}


# beyond accuracy: properties of the recommendation lists as a whole ---------------------------------------------
def coverage(topk: np.ndarray, n_items: int) -> float:
    """Share of the catalogue that appears in at least one list."""
    items = topk[topk >= 0]
    return float(len(np.unique(items)) / n_items) if n_items else 0.0


def novelty(topk: np.ndarray, popularity: np.ndarray, n_users: int) -> float:
    """Mean self-information -log2(p(i)) of recommended items, p(i) = users of i / training users."""
    items = topk[topk >= 0]
    if len(items) == 0:
        return 0.0
    p = np.clip(popularity[items] / max(n_users, 1), 1e-12, 1.0)
    return float(np.mean(-np.log2(p)))


def average_popularity(topk: np.ndarray, popularity: np.ndarray) -> float:
    """Average training popularity (user count) of recommended items (ARP)."""
    items = topk[topk >= 0]
    return float(popularity[items].mean()) if len(items) else 0.0


def gini(topk: np.ndarray, n_items: int) -> float:
    """Gini index of how often each item is recommended: 0 when all equally, (n-1)/n when one item only."""
    counts = np.sort(np.bincount(topk[topk >= 0], minlength=n_items).astype(np.float64))
    if counts.sum() == 0:
        return 0.0
    idx = np.arange(1, n_items + 1)
    return float(((2 * idx - n_items - 1) * counts).sum() / (n_items * counts.sum()))


def long_tail_coverage(topk: np.ndarray, popularity: np.ndarray, head_share: float = 0.2) -> float:
    """Share of the long tail (items outside the top `head_share` by popularity) that appears in some list."""
    n_items = len(popularity)
    order = np.argsort(-popularity, kind="stable")
    tail = np.ones(n_items, bool)
    tail[order[: int(round(head_share * n_items))]] = False
    rec = np.zeros(n_items, bool)
    rec[topk[topk >= 0]] = True
    return float((rec & tail).sum() / max(tail.sum(), 1))
