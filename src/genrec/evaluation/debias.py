"""Popularity debiasing and its price: re-ranking any fitted model, inverse-propensity weights for training, and
the accuracy / long-tail trade-off over the penalty strength.

Re-ranking (`PopularityDebiased`): each user's scores are put on a common scale, then the item's log popularity
is subtracted,

    score'_ui = norm_u(score_ui) - λ · log(1 + n_i),     n_i = training users of item i,

so λ means the same for every model ("zscore": per-user standardisation over all items; "log": log of a
probability-valued score, making score' a PMI-like log p(i|u) - λ log p(i); "none": raw scores). λ = 0 is the
base model. `tradeoff` scores the base model once and re-ranks for every λ, reporting NDCG@k beside long-tail
coverage (the share of items outside the top 20% by popularity that get recommended to someone).

Inverse-propensity weighting (`ipw_weights`): per-event weights n_i^-power (normalised to mean 1) for models that
take sample weights, so that training treats exposure of popular items as less informative.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from genrec.data.interactions import Histories, Interactions
from genrec.data.splits import Holdout, Split
from genrec.evaluation.evaluate import Results, evaluate_topk
from genrec.models.base import Recommender, mask_seen

NORMALIZATIONS = ("zscore", "log", "none")


def normalized_scores(scores: np.ndarray, normalize: str = "zscore") -> np.ndarray:
    """(n_users, n_items) float32: each user's scores on the common scale `normalize` names (a new array)."""
    s = np.asarray(scores, dtype=np.float32)
    if normalize == "zscore":
        return (s - s.mean(1, keepdims=True)) / np.maximum(s.std(1, keepdims=True), 1e-12)
    if normalize == "log":
        return np.log(np.maximum(s, 1e-30))
    if normalize != "none":
        raise ValueError(f"normalize must be one of {', '.join(NORMALIZATIONS)}; got {normalize!r}")
    return s.copy()


def debias_scores(scores: np.ndarray, log_popularity: np.ndarray, lam: float, normalize: str = "zscore") -> np.ndarray:
    """(n_users, n_items) float32: norm(scores) - lam * log_popularity (log_popularity: (n_items,))."""
    return normalized_scores(scores, normalize) - np.float32(lam) * log_popularity.astype(np.float32)[None, :]


class PopularityDebiased(Recommender):
    """Re-ranks a fitted (or to-be-fitted) base model with a log-popularity penalty. Not registered and not
    saved as a bundle: save the base model and wrap it again after loading."""

    name = "popularity_debiased"

    def __init__(self, base: Recommender, lam: float = 0.1, normalize: str = "zscore"):
        """base: any Recommender; lam: penalty strength λ >= 0; normalize: 'zscore', 'log' or 'none'."""
        self.base = base
        self.lam = lam
        self.normalize = normalize

    @property
    def needs_order(self) -> bool:  # type: ignore[override]
        return self.base.needs_order

    def fit(self, train: Interactions, validation: Holdout | None = None) -> PopularityDebiased:
        """Fits the base model if it is not fitted yet; counts item popularity in `train`."""
        if self.lam < 0:
            raise ValueError(f"lam must be >= 0, got {self.lam}")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {', '.join(NORMALIZATIONS)}; got {self.normalize!r}")
        if not self.base.is_fitted:
            self.base.fit(train, validation=validation)
        if self.base.n_items_ != train.n_items:
            raise ValueError(f"the base model has {self.base.n_items_} items, train has {train.n_items}")
        self.log_popularity_ = np.log1p(train.item_popularity()).astype(np.float32)
        self.n_items_ = train.n_items
        return self

    def score(self, histories: Histories) -> np.ndarray:
        self._check_fitted(histories)
        return debias_scores(self.base.score(histories), self.log_popularity_, self.lam, self.normalize)

    def _get_state(self):
        raise NotImplementedError("save the base model; PopularityDebiased is a re-ranking applied after loading")


def ipw_weights(train: Interactions, power: float = 0.5, max_weight: float | None = None) -> np.ndarray:
    """(len(train),) float32 inverse-propensity weights n_i^-power for each event's item, normalised to mean 1;
    then `max_weight` caps them (the mean falls a little below 1), bounding the variance rare items add."""
    if power < 0:
        raise ValueError(f"power must be >= 0, got {power}")
    popularity = np.maximum(train.item_popularity(), 1).astype(np.float64)
    w = popularity[train.items] ** -power
    w /= w.mean() if len(w) else 1.0
    if max_weight is not None:
        w = np.minimum(w, max_weight)
    return w.astype(np.float32)


def debiased_results(model: Recommender, holdout: Holdout, train: Interactions, lams: Sequence[float],
                     ks: tuple[int, ...] = (20,), normalize: str = "zscore", batch_size: int = 1024
                     ) -> dict[float, Results]:
    """`Results` per λ for the fitted `model` re-ranked with the popularity penalty (λ = 0: the model itself).
    The model scores each batch of users once; every λ re-ranks those scores."""
    settings = [(normalize, float(lam)) for lam in lams]
    results = reranked_results(model, holdout, train, settings, ks, batch_size)
    return {lam: results[(normalize, lam)] for _, lam in settings}


def reranked_results(model: Recommender, holdout: Holdout, train: Interactions,
                     settings: Sequence[tuple[str, float]], ks: tuple[int, ...] = (20,), batch_size: int = 1024
                     ) -> dict[tuple[str, float], Results]:
    """`Results` per (normalize, λ) setting, from one scoring pass of `model` over the holdout users (scores
    are never kept for all users at once: each batch is re-ranked for every setting, keeping only its top-K)."""
    for normalize, lam in settings:
        if normalize not in NORMALIZATIONS or lam < 0:
            raise ValueError(f"settings need normalize in {', '.join(NORMALIZATIONS)} and λ >= 0; got "
                             f"({normalize!r}, {lam})")
    popularity = train.item_popularity()
    log_pop = np.log1p(popularity).astype(np.float32)
    kmax = max(ks)
    tops: dict[tuple[str, float], list[np.ndarray]] = {(n, float(lam)): [] for n, lam in settings}
    h = holdout.histories
    for start in range(0, h.n_users, batch_size):
        batch = h[start : start + batch_size]
        raw = np.array(model.score(batch), dtype=np.float32)
        normed = {n: normalized_scores(raw, n) for n, lam in tops if lam != 0}
        for s in [raw, *normed.values()]:
            mask_seen(s, batch.matrix)
        for normalize, lam in tops:
            s = raw if lam == 0 else normed[normalize] - np.float32(lam) * log_pop[None, :]
            tops[(normalize, lam)].append(_top_items(s, kmax))
    return {key: evaluate_topk(np.concatenate(t), holdout, ks, popularity=popularity, n_pop_users=train.n_users)
            for key, t in tops.items()}


def _top_items(scores: np.ndarray, k: int) -> np.ndarray:
    """(n_users, k) item indices of the k largest scores, best first, -1 where only -inf is left (as `top_k`,
    through torch.topk: several times faster than a full argpartition on 41k items)."""
    values, items = torch.from_numpy(scores).topk(min(k, scores.shape[1]), dim=1)
    items = items.numpy().astype(np.int64)
    items[np.isneginf(values.numpy())] = -1
    return items


def tradeoff(model: Recommender, split: Split, lams: Sequence[float], k: int = 20, holdout: Holdout | None = None,
             normalize: str = "zscore") -> pd.DataFrame:
    """One row per λ: ndcg@k, recall@k, tail_coverage@k, coverage@k, arp@k and the relative changes of NDCG and
    long-tail coverage against λ = 0 (always computed). `holdout` defaults to split.test."""
    lams = sorted({0.0, *map(float, lams)})
    results = debiased_results(model, split.test if holdout is None else holdout, split.train, lams, (k,),
                               normalize)
    return tradeoff_frame(results, k)


def tradeoff_frame(results: dict[float, Results], k: int = 20) -> pd.DataFrame:
    """The `tradeoff` table from `Results` per λ (which must include λ = 0, the reference)."""
    if 0.0 not in results:
        raise ValueError("results must include λ = 0, the model without the penalty")
    lams = sorted(results)
    keys = [f"ndcg@{k}", f"recall@{k}", f"tail_coverage@{k}", f"coverage@{k}", f"arp@{k}"]
    frame = pd.DataFrame([{"lam": lam, **{key: results[lam][key] for key in keys}} for lam in lams])
    base = frame.iloc[0]
    frame["ndcg_change"] = frame[f"ndcg@{k}"] / base[f"ndcg@{k}"] - 1 if base[f"ndcg@{k}"] > 0 else 0.0
    tail = base[f"tail_coverage@{k}"]
    frame["tail_coverage_change"] = frame[f"tail_coverage@{k}"] / tail - 1 if tail > 0 else np.inf
    return frame


def choose_lambda(frame: pd.DataFrame, max_ndcg_loss: float = 0.05, min_tail_gain: float | None = None) -> float:
    """The λ of a `tradeoff` frame chosen among those losing at most `max_ndcg_loss` (relative) NDCG; 0 when none
    does. Without `min_tail_gain`: the one with the highest long-tail coverage. With it: the smallest λ whose
    relative tail-coverage gain reaches `min_tail_gain` (the least penalty, hence the least accuracy risk, that
    meets a coverage target), falling back to the highest coverage when no λ within the budget reaches it."""
    ok = frame[frame["ndcg_change"] >= -max_ndcg_loss]
    if ok.empty:
        return 0.0
    if min_tail_gain is not None:
        reached = ok[ok["tail_coverage_change"] >= min_tail_gain]
        if not reached.empty:
            return float(reached["lam"].min())
    return float(ok.sort_values(["tail_coverage_change", "lam"], ascending=[False, True]).iloc[0]["lam"])
