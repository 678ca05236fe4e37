"""Cleaning steps applied between loading and splitting; each returns a new `Interactions`.

- `filter_min_value`: keep ratings >= a threshold (explicit ratings -> implicit feedback, Liang et al. 2018).
- `deduplicate`: one row per (user, item).
- `k_core`: the largest subset where every user and every item has at least k distinct partners.
- `filter_min_counts`: one pass of the same count filter (not iterated, so counts may drop below after).

Steps that can leave a user or item without rows compact both id maps (`Interactions.compact`), so
indices stay dense; attribute frames follow.
"""

from __future__ import annotations

import numpy as np

from genrec.data.interactions import Interactions


def _replace_values(data: Interactions, values: np.ndarray) -> Interactions:
    return Interactions(data.users, data.items, values, data.timestamps, data.user_ids, data.item_ids,
                        data.item_attributes, data.user_attributes, source=data.source)


def filter_min_value(data: Interactions, min_value: float, binarize: bool = False) -> Interactions:
    """Rows with value >= `min_value` (e.g. ratings >= 4 as positive feedback); `binarize` sets values to 1.0.

    Id maps are compacted when rows are dropped."""
    keep = data.values >= min_value
    out = data if keep.all() else data.select(keep).compact()
    return _replace_values(out, np.ones(len(out), np.float32)) if binarize else _replace_values(out, out.values)


def deduplicate(data: Interactions, keep: str = "last") -> Interactions:
    """One row per (user, item): the latest (by timestamp, then file order) with keep='last', the earliest with
    keep='first'. Kept rows stay in their original order; id maps are unchanged (no pair disappears)."""
    if keep not in ("first", "last"):
        raise ValueError(f"keep must be 'first' or 'last', not {keep!r}")
    n = len(data)
    order = np.lexsort((np.arange(n), data.timestamps, data.items, data.users))
    u, i = data.users[order], data.items[order]
    new_pair = np.ones(n, bool)
    new_pair[1:] = (u[1:] != u[:-1]) | (i[1:] != i[:-1])
    chosen = new_pair if keep == "first" else np.append(new_pair[1:], True)
    mask = np.zeros(n, bool)
    mask[order[chosen]] = True
    return data.select(mask)


def _first_of_pair(data: Interactions) -> np.ndarray:
    """Mask of the first row of every distinct (user, item) pair, so bincounts count distinct partners."""
    key = data.users.astype(np.int64) * max(data.n_items, 1) + data.items
    _, first = np.unique(key, return_index=True)
    mask = np.zeros(len(data), bool)
    mask[first] = True
    return mask


def _thresholds(k: int | None, user_k: int | None, item_k: int | None) -> tuple[int, int]:
    user_k = k if user_k is None else user_k
    item_k = k if item_k is None else item_k
    if user_k is None and item_k is None:
        raise ValueError("give k, or user_k and/or item_k")
    return int(user_k or 0), int(item_k or 0)


def k_core(data: Interactions, k: int | None = None, user_k: int | None = None,
           item_k: int | None = None) -> Interactions:
    """The maximal subset in which every user has >= `user_k` and every item >= `item_k` distinct partners
    (`k` sets both where they are not given; a threshold left None is no constraint). Repeated events of a kept
    pair are all kept.

    Removes every user and item below its threshold, recounts, and repeats until nothing changes (each
    round is two bincounts); the result is empty when no such subset exists. Id maps are compacted."""
    user_k, item_k = _thresholds(k, user_k, item_k)
    first = _first_of_pair(data)
    alive = np.ones(len(data), bool)
    while True:
        counted = alive & first
        user_count = np.bincount(data.users[counted], minlength=data.n_users)
        item_count = np.bincount(data.items[counted], minlength=data.n_items)
        drop = alive & ((user_count < user_k)[data.users] | (item_count < item_k)[data.items])
        if not drop.any():
            break
        alive &= ~drop
    return data.select(alive).compact()


def filter_min_counts(data: Interactions, min_user: int = 1, min_item: int = 1) -> Interactions:
    """One pass: keep rows whose user has >= `min_user` and whose item has >= `min_item` distinct partners in
    the input. Not iterated (see `k_core`), so a kept user may end with fewer. Id maps are compacted."""
    first = _first_of_pair(data)
    user_count = np.bincount(data.users[first], minlength=data.n_users)
    item_count = np.bincount(data.items[first], minlength=data.n_items)
    keep = (user_count >= min_user)[data.users] & (item_count >= min_item)[data.items]
    return data.select(keep).compact()
