"""Evaluation splits, seeded and deterministic.

Every split returns a `Split`: the training `Interactions` plus `Holdout`s for validation and test. A holdout
is what the evaluator needs: the histories a model may see for those users (fold-in input) and the target
items it must find. All share the training table's item id map, so indices line up.

- `split_strong_generalization`: held-out users, 80/20 fold-in (Liang et al. 2018, Mult-VAE).
- `split_fixed`: given train and test tables (the LightGCN Gowalla files).
- `split_leave_one_out`: last item test, second-to-last validation (SASRec, BERT4Rec, S3-Rec).
- `split_temporal`: one global time cut; later events are targets.
- `split_random_holdout`: a random share of each user's events are targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from genrec.data.interactions import DataError, Histories, IdMap, Interactions


@dataclass
class Holdout:
    """Held-out users: `histories` (n_users rows) is the model's input, `targets` (n_users, n_items) binary CSR
    the relevant items. `users` are the users' indices in the split's user map (or -1 for unseen users)."""

    histories: Histories
    targets: sp.csr_matrix
    users: np.ndarray
    protocol: str = ""

    def __len__(self) -> int:
        return self.histories.n_users

    def __post_init__(self):
        if self.targets.shape != self.histories.matrix.shape:
            raise ValueError(f"targets {self.targets.shape} and histories {self.histories.matrix.shape} differ")

    def subset(self, rows) -> Holdout:
        rows = np.asarray(rows)
        return Holdout(self.histories[rows], self.targets[rows], self.users[rows], self.protocol)


@dataclass
class Split:
    train: Interactions
    validation: Holdout | None
    test: Holdout
    protocol: str

    def __repr__(self) -> str:
        v = 0 if self.validation is None else len(self.validation)
        return (f"Split({self.protocol}: train {len(self.train)} events, validation {v} users, "
                f"test {len(self.test)} users)")


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _holdout_from_masks(data: Interactions, users: np.ndarray, hist_mask: np.ndarray, target_mask: np.ndarray,
                        protocol: str) -> Holdout:
    """Histories from the rows under hist_mask, targets from rows under target_mask, for `users` in that order."""
    pos = np.full(data.n_users, -1, np.int64)
    pos[users] = np.arange(len(users))
    hist = data.select(hist_mask & (pos[data.users] >= 0))
    targ = data.select(target_mask & (pos[data.users] >= 0))
    # re-index rows to 0..len(users)-1
    h = Interactions(pos[hist.users], hist.items, hist.values, hist.timestamps,
                     IdMap(data.user_ids.raw[users], "user"), data.item_ids, source=data.source)
    t = sp.csr_matrix((np.ones(len(targ), np.float32), (pos[targ.users], targ.items)),
                      shape=(len(users), data.n_items))
    t.sum_duplicates()
    t.data[:] = 1.0
    return Holdout(h.histories(), t, users, protocol)


def split_strong_generalization(data: Interactions, n_heldout: int | float = 0.1, fold_in: float = 0.8,
                                seed: int = 0, validation: bool = True) -> Split:
    """Held-out users (Liang et al. 2018): `n_heldout` users (count, or share if < 1) for test and as many for
    validation; for each, a random `fold_in` share of events is the history and the rest are targets.

    As in Liang et al.'s preprocessing, held-out users' events on items that no training user has are dropped
    before the fold-in draw (no model could rank them); those items stay in the item map with empty columns.
    `Holdout.users` index the input's user map."""
    rng = _rng(seed)
    n = data.n_users
    k = int(round(n * n_heldout)) if isinstance(n_heldout, float) and n_heldout < 1 else int(n_heldout)
    if k < 1 or (2 if validation else 1) * k >= n:
        raise DataError(f"n_heldout={n_heldout} leaves no users for training or for held-out sets ({n} users)")
    perm = rng.permutation(n)
    test_users = np.sort(perm[:k])
    val_users = np.sort(perm[k : 2 * k]) if validation else np.zeros(0, np.int64)
    train_users = np.sort(perm[(2 if validation else 1) * k :])
    u = data.users
    is_train = np.zeros(n, bool)
    is_train[train_users] = True
    known_item = np.bincount(data.items[is_train[u]], minlength=data.n_items) > 0
    kept = is_train[u] | known_item[data.items]
    # per-event fold-in draw among kept events: each user's events shuffled, first ceil(fold_in * n) are history
    order = np.lexsort((rng.random(len(data)), ~kept, u))
    counts = np.bincount(u[kept], minlength=n)
    all_counts = np.bincount(u, minlength=n)
    starts = np.concatenate([[0], np.cumsum(all_counts)[:-1]])
    rank = np.empty(len(data), np.int64)
    rank[order] = np.arange(len(data)) - np.repeat(starts, all_counts)
    n_hist = np.ceil(counts * fold_in).astype(np.int64)
    in_hist = kept & (rank < n_hist[u])
    is_target = kept & ~in_hist
    train = _keep_users(data.select(is_train[u]), train_users)
    test = _holdout_from_masks(data, test_users, in_hist, is_target, "strong_generalization")
    val = _holdout_from_masks(data, val_users, in_hist, is_target, "strong_generalization") if validation else None
    return Split(train, val, test, "strong_generalization")


def _keep_users(data: Interactions, users: np.ndarray) -> Interactions:
    """Re-index the user map to `users` (sorted indices); the item map is unchanged."""
    new = np.full(data.n_users, -1, np.int64)
    new[users] = np.arange(len(users))
    attrs = None if data.user_attributes is None else data.user_attributes.iloc[users].reset_index(drop=True)
    return Interactions(new[data.users], data.items, data.values, data.timestamps,
                        IdMap(data.user_ids.raw[users], "user"), data.item_ids, data.item_attributes, attrs,
                        source=data.source)


def split_fixed(train: Interactions, test: Interactions, protocol: str = "fixed") -> Split:
    """A given train/test pair (LightGCN files): every user's training row is the history, their test row the
    targets. `test` must use the same id maps as `train` (load them together). Users with no test items are
    left out of the holdout."""
    if test.item_ids is not train.item_ids and test.item_ids != train.item_ids:
        raise DataError("train and test must share one item id map; load them together")
    n_test_users = test.n_users
    if test.user_ids is not train.user_ids and (
        n_test_users > train.n_users or not np.array_equal(test.user_ids.raw, train.user_ids.raw[:n_test_users])
    ):
        raise DataError("train and test must share one user id map (test's may be a prefix); load them together")
    targets = test.csr(binary=True)
    if targets.shape[0] < train.n_users:
        targets = sp.vstack([targets, sp.csr_matrix((train.n_users - targets.shape[0], train.n_items))]).tocsr()
    users = np.flatnonzero(np.diff(targets.indptr) > 0)
    hist = train.histories(users)
    return Split(train, None, Holdout(hist, targets[users], users, protocol), protocol)


def split_leave_one_out(data: Interactions, validation: bool = True, min_length: int = 3) -> Split:
    """Per user, by time: the last event is the test target, the one before it the validation target, the rest
    training. Users with fewer than `min_length` events stay entirely in training. The test history is the
    whole sequence before the test item (training plus the validation item), as in SASRec."""
    order = data._time_order()
    counts = np.bincount(data.users, minlength=data.n_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos_from_end = np.repeat(counts, counts) - (np.arange(len(order)) - np.repeat(starts, counts)) - 1
    eligible = np.repeat(counts >= min_length, counts)
    role = np.zeros(len(data), np.int8)  # 0 train, 1 validation, 2 test (in `order` positions)
    role[eligible & (pos_from_end == 0)] = 2
    if validation:
        role[eligible & (pos_from_end == 1)] = 1
    role_orig = np.empty_like(role)
    role_orig[order] = role
    users = np.flatnonzero(counts >= min_length)
    train = data.select(role_orig == 0)
    test = _holdout_from_masks(data, users, role_orig < 2, role_orig == 2, "leave_one_out")
    val = _holdout_from_masks(data, users, role_orig == 0, role_orig == 1, "leave_one_out") if validation else None
    return Split(train, val, test, "leave_one_out")


def split_temporal(data: Interactions, test_fraction: float = 0.2, validation_fraction: float = 0.1) -> Split:
    """One global time cut: the latest `test_fraction` of events are test targets, the `validation_fraction`
    before them validation targets. Histories are everything before each cut; users with no history or no
    target are left out of that holdout."""
    if not data.has_timestamps:
        raise DataError(f"{data.source}: a temporal split needs timestamps")
    t = data.timestamps
    t_test = np.quantile(t, 1 - test_fraction, method="lower")
    t_val = np.quantile(t, 1 - test_fraction - validation_fraction, method="lower")
    train = data.select(t <= t_val)
    val = _temporal_holdout(data, t <= t_val, (t > t_val) & (t <= t_test)) if validation_fraction > 0 else None
    test = _temporal_holdout(data, t <= t_test, t > t_test)
    return Split(train, val, test, "temporal")


def _temporal_holdout(data: Interactions, hist_mask: np.ndarray, target_mask: np.ndarray) -> Holdout:
    has_hist = np.bincount(data.users[hist_mask], minlength=data.n_users) > 0
    has_target = np.bincount(data.users[target_mask], minlength=data.n_users) > 0
    users = np.flatnonzero(has_hist & has_target)
    return _holdout_from_masks(data, users, hist_mask, target_mask, "temporal")


def split_random_holdout(data: Interactions, test_fraction: float = 0.2, validation_fraction: float = 0.1,
                         seed: int = 0) -> Split:
    """Per user, a random share of events are test targets and another validation targets; users with fewer
    than 3 events stay in training only."""
    rng = _rng(seed)
    r = rng.random(len(data))
    counts = np.bincount(data.users, minlength=data.n_users)
    eligible = (counts >= 3)[data.users]
    is_test = eligible & (r < test_fraction)
    is_val = eligible & ~is_test & (r < test_fraction + validation_fraction)
    train = data.select(~is_test & ~is_val)
    users = np.flatnonzero(counts >= 3)
    test = _holdout_from_masks(data, users, ~is_test, is_test, "random_holdout")
    val = _holdout_from_masks(data, users, ~is_test & ~is_val, is_val, "random_holdout")
    test = test.subset(np.flatnonzero(np.diff(test.targets.indptr) > 0))
    val = val.subset(np.flatnonzero(np.diff(val.targets.indptr) > 0))
    return Split(train, val, test, "random_holdout")
