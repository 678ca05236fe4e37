"""genrec's evaluation agrees with the published evaluation code it claims to follow.

Each reference below is an independent, deliberately plain re-implementation written from the published
definitions (one user at a time, Python sets and loops), not genrec code:
- LightGCN-PyTorch (He et al. 2020; code/Procedure.py `Test` and code/utils.py `RecallPrecision_ATk`,
  `NDCGatK_r`): per test user, rank every item with the training items pushed to the bottom, take the top 20,
  recall = hits / len(test items), NDCG with DCG = sum 1/log2(rank + 2) (rank from 0) and IDCG over
  min(20, len(test items)); averaged over users that have test items.
- Mult-VAE notebook (Liang et al. 2018; `Recall_at_k_batch`, `NDCG_binary_at_k_batch`): fold-in items set to
  -inf, recall = hits / min(k, |held-out|), the same NDCG.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from genrec.data.interactions import IdMap, Interactions
from genrec.data.splits import split_fixed, split_strong_generalization
from genrec.evaluation.evaluate import evaluate, evaluate_topk
from genrec.models.base import mask_seen, top_k
from tests.evaluation.fixed import FixedScores, distinct_scores

N_USERS, N_ITEMS, K = 300, 500, 20


# LightGCN reference ------------------------------------------------------------------------------------------
def lightgcn_reference(scores: np.ndarray, train_items: dict[int, list[int]], test_items: dict[int, list[int]],
                       k: int = K) -> tuple[float, float]:
    """Mean Recall@k and NDCG@k over the users in `test_items`, one user at a time."""
    recalls, ndcgs = [], []
    for user, truth in test_items.items():
        rating = scores[user].astype(np.float64)
        rating[train_items.get(user, [])] = -np.inf
        ranked = sorted(range(len(rating)), key=lambda i: -rating[i])[:k]
        label = [1.0 if i in set(truth) else 0.0 for i in ranked]
        recalls.append(sum(label) / len(truth))
        dcg = sum(rel / math.log2(rank + 2) for rank, rel in enumerate(label))
        idcg = sum(1.0 / math.log2(rank + 2) for rank in range(min(k, len(truth))))
        ndcgs.append(dcg / idcg if idcg else 0.0)
    return sum(recalls) / len(recalls), sum(ndcgs) / len(ndcgs)


@pytest.fixture(scope="module")
def gowalla_like():
    """Random train/test item sets (disjoint per user; some users have no test items) and a score matrix."""
    rng = np.random.default_rng(2020)
    train_items, test_items = {}, {}
    for u in range(N_USERS):
        items = rng.permutation(N_ITEMS)
        n_train, n_test = rng.integers(1, 40), rng.integers(0, 30)
        train_items[u] = sorted(items[:n_train].tolist())
        if n_test:
            test_items[u] = sorted(items[n_train : n_train + n_test].tolist())
    users, item_ids = IdMap(np.arange(N_USERS), "user"), IdMap(np.arange(N_ITEMS), "item")

    def table(sets: dict[int, list[int]]) -> Interactions:
        u = np.concatenate([[user] * len(items) for user, items in sets.items()]).astype(np.int64)
        i = np.concatenate([items for items in sets.values()]).astype(np.int64)
        return Interactions(u, i, None, None, users, item_ids)

    split = split_fixed(table(train_items), table(test_items))
    return train_items, test_items, split, distinct_scores(rng, N_USERS, N_ITEMS)


def test_lightgcn_protocol_agrees_with_evaluate(gowalla_like):
    train_items, test_items, split, scores = gowalla_like
    assert 0 < len(test_items) < N_USERS, "the fixture must include users without test items"
    recall, ndcg = lightgcn_reference(scores, train_items, test_items)
    model = FixedScores(scores).fit(split.train)
    results = evaluate(model, split.test, ks=(K,), metrics=("recall", "ndcg"), batch_size=64)
    assert results.n_users == len(test_items)
    assert results[f"recall@{K}"] == pytest.approx(recall, abs=1e-6)
    assert results[f"ndcg@{K}"] == pytest.approx(ndcg, abs=1e-6)
    assert 0.0 < recall < 1.0 and 0.0 < ndcg < 1.0  # a comparison of zeros would prove nothing


def test_lightgcn_protocol_agrees_with_evaluate_topk_per_user(gowalla_like):
    train_items, test_items, split, scores = gowalla_like
    s = scores[split.test.users].copy()
    mask_seen(s, split.test.histories.matrix)
    topk, _ = top_k(s, K)
    results = evaluate_topk(topk, split.test, ks=(K,), metrics=("recall", "ndcg"))
    for row, user in enumerate(split.test.users):
        recall, ndcg = lightgcn_reference(scores, train_items, {int(user): test_items[int(user)]})
        assert results.per_user[f"recall@{K}"][row] == pytest.approx(recall, abs=1e-6)
        assert results.per_user[f"ndcg@{K}"][row] == pytest.approx(ndcg, abs=1e-6)


# Mult-VAE (Liang et al.) reference ---------------------------------------------------------------------------
def liang_recall_at_k(x_pred: np.ndarray, heldout: np.ndarray, k: int) -> np.ndarray:
    """hits in the top k / min(k, number of held-out items); x_pred dense scores, heldout dense 0/1."""
    out = []
    for scores, truth in zip(x_pred, heldout):
        top = set(np.argsort(-scores, kind="stable")[:k].tolist())
        relevant = set(np.flatnonzero(truth).tolist())
        out.append(len(top & relevant) / min(k, len(relevant)))
    return np.array(out)


def liang_ndcg_at_k(x_pred: np.ndarray, heldout: np.ndarray, k: int) -> np.ndarray:
    """Binary-gain NDCG@k, discount 1/log2(rank + 2) with rank from 0, IDCG over min(k, |held-out|)."""
    out = []
    for scores, truth in zip(x_pred, heldout):
        ranked = np.argsort(-scores, kind="stable")[:k]
        dcg = sum(1.0 / math.log2(r + 2) for r, i in enumerate(ranked) if truth[i] > 0)
        idcg = sum(1.0 / math.log2(r + 2) for r in range(min(k, int((truth > 0).sum()))))
        out.append(dcg / idcg)
    return np.array(out)


def test_liang_recall_and_ndcg_agree_with_evaluate():
    rng = np.random.default_rng(2018)
    # distinct items per user, from 5 to 300 of them, so some users hold out more than K items
    lists = [rng.permutation(N_ITEMS)[: rng.integers(5, 300)] for _ in range(N_USERS)]
    users = np.repeat(np.arange(N_USERS), [len(x) for x in lists])
    data = Interactions(users, np.concatenate(lists), None, None,
                        IdMap(np.arange(N_USERS), "user"), IdMap(np.arange(N_ITEMS), "item"))
    split = split_strong_generalization(data, n_heldout=60, seed=3, validation=False)
    holdout = split.test
    scores = distinct_scores(rng, N_USERS, N_ITEMS)
    has_target = np.diff(holdout.targets.indptr) > 0
    x_pred = scores[holdout.users].astype(np.float64)
    x_pred[holdout.histories.matrix.toarray() > 0] = -np.inf  # the notebook's X_pred[X.nonzero()] = -inf
    heldout = holdout.targets.toarray()
    results = evaluate(FixedScores(scores).fit(split.train), holdout, ks=(20, 50, 100),
                       metrics=("recall_liang", "ndcg"))
    assert results.n_users == has_target.sum() > 30
    n_heldout = np.diff(holdout.targets.indptr)
    assert (n_heldout > 20).any() and (n_heldout < 20).any(), "truncation must matter for some users, not all"
    for k in (20, 50, 100):
        recall = liang_recall_at_k(x_pred[has_target], heldout[has_target], k)
        ndcg = liang_ndcg_at_k(x_pred[has_target], heldout[has_target], k)
        np.testing.assert_allclose(results.per_user[f"recall_liang@{k}"], recall, atol=1e-6)
        np.testing.assert_allclose(results.per_user[f"ndcg@{k}"], ndcg, atol=1e-6)
        assert results[f"recall_liang@{k}"] == pytest.approx(recall.mean(), abs=1e-6)
        assert results[f"ndcg@{k}"] == pytest.approx(ndcg.mean(), abs=1e-6)
