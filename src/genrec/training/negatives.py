"""Uniform negative sampling without replacement that is fixed by (seed, epoch, user), whatever the batching.

A user's negatives for an epoch are drawn from a hash of (seed, epoch, stream, user, item) rather than from a
stateful generator, so every pass of an epoch (CFGAN's D and G passes) sees the same sets, a resumed run replays
them, and two streams give independent sets. `NegativeSampler` does O(k) work per user for small draws (a hashed
candidate list) and one selection over the catalogue for large ones. Used by `genrec.models.cfgan`.
"""

from __future__ import annotations

import numpy as np
import torch

from genrec.training.data import SparseRows

CANDIDATE_STREAM = 16  # added to a sampler's stream for its candidate-list draws


def hashed_uniform(seed: int, epoch: int, stream: int, users: np.ndarray, n_items: int,
                   stride: int | None = None) -> np.ndarray:
    """(B, n_items) float64 in [0, 1): a fixed pseudo-random number per (seed, epoch, stream, user, column)
    (splitmix64 finaliser on uint64, whose arithmetic wraps by definition); the key of (user, column) is
    user * stride + column (stride: n_items unless given)."""
    with np.errstate(over="ignore"):
        base = _mix64(np.array([seed, epoch, stream], dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15))
        key = (np.asarray(users, np.uint64)[:, None] * np.uint64(stride or n_items)
               + np.arange(n_items, dtype=np.uint64))
        key ^= np.bitwise_xor.reduce(base)
        key = _mix64(key)
        key >>= np.uint64(11)
        return key.astype(np.float64) / float(1 << 53)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, in place (callers pass a fresh array; B x n_items temporaries would double the cost)."""
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def entries(rows: torch.Tensor, items: torch.Tensor, values: torch.Tensor, users: torch.Tensor,
            n_items: int) -> SparseRows:
    """SparseRows of (row, item, value) triples, sorted by (row, item); `users` (B,) labels the rows."""
    order = stable_argsort(rows * n_items + items)
    rows = rows[order]
    offsets = torch.zeros(len(users) + 1, dtype=torch.int64, device=rows.device)
    offsets[1:] = torch.bincount(rows, minlength=len(users)).cumsum(0)
    return SparseRows(items[order], offsets, values[order], rows, users)


class NegativeSampler:
    """Draws N_u(t): for user u in epoch t, exactly k_u = min(floor(ratio * #non-purchased), limit) of u's
    non-purchased items, uniformly without replacement. Where k_u is at most a quarter of them, the first k_u
    distinct non-purchased items of a hashed candidate list of 2 k_u + 32 draws (O(k_u) work); otherwise (or
    in the rare case the list runs short) those with the k_u smallest hashed keys over the catalogue (one
    selection per user and epoch, cached; purchased items get key 2, never drawn)."""

    def __init__(self, n_items: int, ratio: float, seed: int, stream: int, limit: int | None = None):
        self.n_items, self.ratio, self.seed, self.stream, self.limit = n_items, ratio, seed, stream, limit
        self.epoch, self.cutoffs = -1, np.zeros(0)
        self.last: tuple[int, bytes, SparseRows] | None = None  # D's and G's passes ask for the same batch

    def __call__(self, rows: SparseRows, epoch: int) -> SparseRows:
        """The batch users' negatives for `epoch` as sparse rows (values 1)."""
        users = rows.users.cpu().numpy()
        tag = users.tobytes()
        if self.last is not None and self.last[0] == epoch and self.last[1] == tag:
            return self.last[2]
        bought_rows, bought_items = rows.rows.cpu().numpy(), rows.indices.cpu().numpy()
        free = self.n_items - np.bincount(bought_rows, minlength=len(users))
        k = np.floor(self.ratio * free + 1e-9).astype(np.int64)
        k = np.minimum(k, self.limit) if self.limit is not None else k
        bought = bought_rows * self.n_items + bought_items
        few = 4 * k <= free
        r1, i1, short = self._from_candidates(epoch, np.flatnonzero(few), users, k, bought)
        r2, i2 = self._by_selection(epoch, np.flatnonzero(~few | short), users, k, bought)
        r, i = (torch.from_numpy(np.concatenate(x)).to(rows.values.device) for x in ((r1, r2), (i1, i2)))
        out = entries(r, i, torch.ones(len(r), device=r.device), rows.users, self.n_items)
        self.last = (epoch, tag, out)
        return out

    def _from_candidates(self, epoch: int, which: np.ndarray, users, k, bought) -> tuple[np.ndarray, ...]:
        """(rows, items, short (B,) bool) for the batch rows `which`: each takes the first k distinct
        non-purchased items among its 2k + 32 hashed draws (the key of draw j does not depend on the batch)."""
        short = np.zeros(len(users), bool)
        if not len(which) or not k[which].any():
            return np.zeros(0, np.int64), np.zeros(0, np.int64), short
        width = 2 * k[which] + 32
        u = hashed_uniform(self.seed, epoch, self.stream + CANDIDATE_STREAM, users[which],
                           int(width.max()), stride=1 << 32)
        keys = which[:, None] * self.n_items + (u * self.n_items).astype(np.int64)
        ok = (np.arange(u.shape[1])[None, :] < width[:, None]) & ~np.isin(keys, bought)
        first = np.zeros(keys.size, bool)
        first[np.unique(np.where(ok, keys, -1).ravel(), return_index=True)[1]] = True
        ok &= first.reshape(keys.shape)
        rank = np.cumsum(ok, axis=1)
        take = ok & (rank <= k[which][:, None])
        short[which] = rank[:, -1] < k[which]
        take[short[which]] = False
        return keys[take] // self.n_items, keys[take] % self.n_items, short

    def _by_selection(self, epoch: int, which: np.ndarray, users, k, bought) -> tuple[np.ndarray, np.ndarray]:
        """(rows, items) for the batch rows `which`: the k smallest hashed keys over the whole catalogue."""
        if not len(which) or not k[which].any():
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        keys = hashed_uniform(self.seed, epoch, self.stream, users[which], self.n_items)
        pos = np.flatnonzero(np.isin(bought // self.n_items, which))
        keys[np.searchsorted(which, bought[pos] // self.n_items), bought[pos] % self.n_items] = 2.0
        if epoch != self.epoch or len(self.cutoffs) <= int(users.max()):
            self.cutoffs, self.epoch = np.full(max(int(users.max()) + 1, len(self.cutoffs)), np.nan), epoch
        for row in np.flatnonzero(np.isnan(self.cutoffs[users[which]])).tolist():
            n = int(k[which[row]])  # the n-th smallest key is the cut-off: a selection (introselect), not a sort
            self.cutoffs[users[which[row]]] = float(np.partition(keys[row], n - 1)[n - 1]) if n > 0 else -1.0
        row, items = np.nonzero(keys <= self.cutoffs[users[which]][:, None])
        return which[row], items


def stable_argsort(keys: torch.Tensor) -> torch.Tensor:
    """A stable argsort; numpy's on CPU (torch's CPU sort runs on the thread pool, and on a busy machine it was
    10-100x slower than numpy's, and slower still on keys that come in sorted runs)."""
    if keys.device.type == "cpu":
        return torch.from_numpy(np.argsort(keys.numpy(), kind="stable"))
    return torch.argsort(keys, stable=True)
