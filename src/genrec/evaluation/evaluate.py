"""Evaluate a fitted model on a holdout: full ranking over every item except the user's history items.

`evaluate` returns `Results`: the mean of every ranking metric at every K, beyond-accuracy figures
(coverage, novelty, average popularity, Gini, long-tail coverage), and the data-imbalance view: the same
metrics per user-activity bucket (by history length) and per item-popularity bucket (targets restricted to
the items of that bucket).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from genrec.data.splits import Holdout
from genrec.evaluation import metrics as M

DEFAULT_METRICS = ("recall", "recall_liang", "ndcg", "hr", "mrr", "map", "precision")


@dataclass
class Results:
    """summary: {'ndcg@20': 0.31, ...}; per_user: {'ndcg@20': (n_users,) array}; buckets: long tables."""

    summary: dict[str, float]
    per_user: dict[str, np.ndarray] = field(repr=False)
    user_buckets: pd.DataFrame = field(repr=False)
    item_buckets: pd.DataFrame = field(repr=False)
    n_users: int = 0
    seconds: float = 0.0
    protocol: str = ""

    def __getitem__(self, key: str) -> float:
        return self.summary[key]

    def to_series(self, name: str = "") -> pd.Series:
        return pd.Series(self.summary, name=name)


def evaluate(
    model,
    holdout: Holdout,
    ks: tuple[int, ...] = (10, 20),
    metrics: tuple[str, ...] = DEFAULT_METRICS,
    train=None,
    n_user_buckets: int = 4,
    item_bucket_shares: tuple[float, ...] = (0.2, 0.3, 0.5),
    batch_size: int = 1024,
) -> Results:
    """Rank all items for each held-out user (history items excluded) and score the top max(ks).

    train: the training `Interactions`; item popularity (novelty, ARP, long tail, item buckets) is counted
    there. When None, it is counted in the holdout histories instead.
    """
    for m in metrics:
        if m not in M.RANKING_METRICS:
            raise ValueError(f"unknown metric {m!r}; known: {', '.join(M.RANKING_METRICS)}")
    start = time.perf_counter()
    kmax = max(ks)
    recs = model.recommend(holdout.histories, k=kmax, exclude_seen=True, batch_size=batch_size)
    popularity, n_pop_users = None, None
    if train is not None:
        popularity, n_pop_users = train.item_popularity(), train.n_users
    return evaluate_topk(recs.items, holdout, ks, metrics, popularity, n_pop_users, n_user_buckets,
                         item_bucket_shares, seconds=time.perf_counter() - start)


def evaluate_topk(topk: np.ndarray, holdout: Holdout, ks=(10, 20), metrics=DEFAULT_METRICS,
                  popularity: np.ndarray | None = None, n_pop_users: int | None = None,
                  n_user_buckets: int = 4, item_bucket_shares=(0.2, 0.3, 0.5), seconds: float = 0.0) -> Results:
    """The same as `evaluate`, from precomputed top-K item indices (n_users, >= max(ks)).
    popularity: (n_items,) user counts per item among `n_pop_users` users (default: the holdout histories)."""
    targets = holdout.targets.tocsr()
    n_items = targets.shape[1]
    if popularity is None:
        popularity = np.bincount(holdout.histories.matrix.indices, minlength=n_items)
        n_pop_users = holdout.histories.n_users
    popularity = np.asarray(popularity, dtype=np.float64)
    hits = M.hit_matrix(topk, targets)
    n_rel = M.n_relevant(targets)
    valid = n_rel > 0  # users with no target do not count
    per_user = {f"{m}@{k}": M.RANKING_METRICS[m](hits, n_rel, k)[valid] for m in metrics for k in ks}
    summary = {key: float(v.mean()) if len(v) else 0.0 for key, v in per_user.items()}
    top = topk[valid]
    for k in ks:
        summary[f"coverage@{k}"] = M.coverage(top[:, :k], n_items)
    kmax = max(ks)
    summary[f"novelty@{kmax}"] = M.novelty(top[:, :kmax], popularity, max(n_pop_users or 1, 1))
    summary[f"arp@{kmax}"] = M.average_popularity(top[:, :kmax], popularity)
    summary[f"gini@{kmax}"] = M.gini(top[:, :kmax], n_items)
    summary[f"tail_coverage@{kmax}"] = M.long_tail_coverage(top[:, :kmax], popularity)
    lengths = holdout.histories.lengths()[valid]
    user_buckets = _user_buckets(per_user, lengths, n_user_buckets)
    item_buckets = _item_buckets(topk[valid], targets[np.flatnonzero(valid)], popularity, ks, item_bucket_shares)
    return Results(summary, per_user, user_buckets, item_buckets, int(valid.sum()), seconds, holdout.protocol)


def _user_buckets(per_user: dict[str, np.ndarray], lengths: np.ndarray, n_buckets: int) -> pd.DataFrame:
    """Users grouped by history length into `n_buckets` quantile buckets; mean of each metric per bucket."""
    if len(lengths) == 0:
        return pd.DataFrame()
    edges = np.unique(np.quantile(lengths, np.linspace(0, 1, n_buckets + 1), method="lower"))
    which = np.clip(np.searchsorted(edges, lengths, side="right") - 1, 0, max(len(edges) - 2, 0))
    rows = []
    for b in range(max(len(edges) - 1, 1)):
        sel = which == b
        if not sel.any():
            continue
        lo, hi = int(lengths[sel].min()), int(lengths[sel].max())
        row = {"bucket": f"{lo}-{hi} items", "users": int(sel.sum())}
        row.update({key: float(v[sel].mean()) for key, v in per_user.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def item_popularity_groups(popularity: np.ndarray, shares=(0.2, 0.3, 0.5)) -> np.ndarray:
    """(n_items,) group index: 0 = the most popular `shares[0]` of items ('head'), then the next, ..."""
    order = np.argsort(-popularity, kind="stable")
    bounds = np.round(np.cumsum(shares) / np.sum(shares) * len(popularity)).astype(np.int64)
    group = np.empty(len(popularity), np.int64)
    start = 0
    for g, end in enumerate(bounds):
        group[order[start:end]] = g
        start = end
    return group


def _item_buckets(topk: np.ndarray, targets: sp.csr_matrix, popularity: np.ndarray, ks, shares) -> pd.DataFrame:
    """Per item-popularity group: recall and NDCG counting only targets in that group, and the share of
    recommendations that fall in it."""
    group = item_popularity_groups(popularity, shares)
    names = _group_names(len(shares))
    rows = []
    for g, name in enumerate(names):
        in_group = (group == g).astype(np.float32)
        t = targets.multiply(in_group[None, :]).tocsr()
        t.eliminate_zeros()
        n_rel = M.n_relevant(t)
        hits = M.hit_matrix(topk, t)
        users = n_rel > 0
        row = {"bucket": name, "items": int((group == g).sum()), "users_with_targets": int(users.sum())}
        for k in ks:
            row[f"recall@{k}"] = float(M.recall_at_k(hits, n_rel, k)[users].mean()) if users.any() else 0.0
            row[f"ndcg@{k}"] = float(M.ndcg_at_k(hits, n_rel, k)[users].mean()) if users.any() else 0.0
            rec = topk[:, :k]
            rec = rec[rec >= 0]
            row[f"rec_share@{k}"] = float((group[rec] == g).mean()) if len(rec) else 0.0
        rows.append(row)
    return pd.DataFrame(rows)


def _group_names(n: int) -> list[str]:
    if n == 3:
        return ["head", "mid", "tail"]
    return [f"group{g + 1}" for g in range(n)]
