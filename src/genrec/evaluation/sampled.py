"""Sampled metrics, for comparison with papers that report them; never the default.

Some papers (BERT4Rec, S3-Rec, NCF and many since) rank each user's held-out items against a small random sample
of other items rather than against the whole catalogue: 100 negatives drawn uniformly ("uni100") or in
proportion to their popularity ("pop100"). Such figures are much higher than full-ranking ones and can order
models differently from them (Krichene & Rendle, KDD 2020), so genrec computes them only when asked and labels
every key with the scheme: `uni100:hr@10`, `pop100:ndcg@10`.

For each user, the negatives are drawn without replacement from the items that are neither in the history nor
among the targets, with weight 1 (uniform) or the item's training popularity (items no training user has are
then never drawn). The candidates are the targets plus the negatives; the model's scores of every other item are
set to -inf and the ranking metrics are those of full ranking on what is left, so with as many negatives as there
are items they equal the full-ranking metrics exactly. Sampling uses the Gumbel top-k trick (the n largest of
log w_i + Gumbel noise are a weighted sample without replacement), one row of noise per user from one seeded
stream, so results depend on the seed but not on the batch size.
"""

from __future__ import annotations

import time

import numpy as np

from genrec.data.splits import Holdout
from genrec.evaluation.evaluate import Results, evaluate_topk
from genrec.models.base import mask_seen, top_k

SAMPLINGS = ("uniform", "popularity")
SAMPLED_METRICS = ("hr", "ndcg", "mrr", "recall", "precision", "map")


def scheme_label(n_negatives: int, sampling: str) -> str:
    """'uni100' / 'pop100': the prefix of every sampled metric's key."""
    return f"{sampling[:3]}{n_negatives}"


def sample_negatives(excluded, n_negatives: int, weights: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """(n_users, min(n_negatives, n_items)) item indices, padded with -1 at the end of a row where the user has
    fewer allowed items.

    excluded: (n_users, n_items) CSR of items that may not be drawn (history and targets); weights: (n_items,)
    non-negative sampling weights, None for uniform. Each row is a sample without replacement."""
    n_users, n_items = excluded.shape
    noise = rng.random((n_users, n_items), dtype=np.float32)
    keys = -np.log(-np.log(np.maximum(noise, np.float32(1e-30))))  # Gumbel(0, 1)
    if weights is not None:
        with np.errstate(divide="ignore"):
            keys += np.log(np.asarray(weights, dtype=np.float32))[None, :]  # log 0 = -inf: never drawn
    mask_seen(keys, excluded)
    negatives, _ = top_k(keys, n_negatives)
    return negatives


def evaluate_sampled(model, holdout: Holdout, n_negatives: int = 100, sampling: str = "uniform",
                     ks: tuple[int, ...] = (10,), metrics: tuple[str, ...] = ("hr", "ndcg"), train=None,
                     seed: int = 0, batch_size: int = 512) -> Results:
    """Rank each user's targets among `n_negatives` sampled items (see the module docstring).

    train: the training `Interactions`, whose item popularity weights "popularity" sampling (default: the holdout
    histories). Results.summary keys are labelled, e.g. 'uni100:ndcg@10'; per-user-activity buckets are kept,
    item buckets and beyond-accuracy figures (meaningless on a sample) are not."""
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
    if n_negatives < 1:
        raise ValueError(f"n_negatives must be at least 1, got {n_negatives}")
    for m in metrics:
        if m not in SAMPLED_METRICS:
            raise ValueError(f"unknown sampled metric {m!r}; known: {', '.join(SAMPLED_METRICS)}")
    start = time.perf_counter()
    targets = holdout.targets.tocsr()
    weights = None
    if sampling == "popularity":
        weights = train.item_popularity() if train is not None else np.bincount(
            holdout.histories.matrix.indices, minlength=targets.shape[1])
    rng = np.random.default_rng(seed)
    kmax = max(ks)
    tops = []
    for lo in range(0, len(holdout), batch_size):
        batch = holdout.histories[lo: lo + batch_size]
        rows = targets[lo: lo + batch_size]
        excluded = (batch.binary() + rows).tocsr()
        negatives = sample_negatives(excluded, n_negatives, weights, rng)
        scores = np.asarray(model.score(batch), dtype=np.float32)
        keep = np.zeros(scores.shape, bool)
        keep[np.repeat(np.arange(rows.shape[0]), np.diff(rows.indptr)), rows.indices] = True
        users, slots = np.nonzero(negatives >= 0)
        keep[users, negatives[users, slots]] = True
        restricted = np.where(keep, scores, np.float32(-np.inf))
        tops.append(top_k(restricted, kmax)[0])
    topk = np.concatenate(tops) if tops else np.zeros((0, kmax), np.int64)
    full = evaluate_topk(topk, holdout, ks, metrics, seconds=time.perf_counter() - start)
    label = scheme_label(n_negatives, sampling)
    names = [f"{m}@{k}" for m in metrics for k in ks]
    protocol = f"{holdout.protocol}; sampled: {n_negatives} {sampling} negatives per user ({label})"
    return Results({f"{label}:{key}": full.summary[key] for key in names},
                   {f"{label}:{key}": full.per_user[key] for key in names},
                   full.user_buckets.rename(columns={key: f"{label}:{key}" for key in names}),
                   full.item_buckets.iloc[0:0], full.n_users, time.perf_counter() - start, protocol)

