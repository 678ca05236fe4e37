"""Why was item i recommended to user u? The history items that contributed most, for any model.

Methods (`method=`):
- "leave_one_out": exact. The score of i is recomputed with each history item removed; an item's contribution
  is the score it takes away. All the modified histories are stacked and scored in batched `score` calls (one
  for a short history), so it works for every model and is the default for bag-of-items models
  (EASE, ItemKNN, Mult-VAE/DAE, RecVAE, LDA, iALS).
- "gradient": gradient × input on the sparse input of a torch model (one backward pass for a whole batch of
  users): contribution of history entry j = x_j · ∂score_i/∂x_j. Exact for a linear model, a first-order
  approximation otherwise.
- "attention": for Transformer sequence models (SASRec, BERT4Rec: a torch module with `blocks` of self-attention
  layers having `qkv`, `norm1` and `n_heads`), or any model exposing `attention_weights(histories)`: the last
  layer's attention of the final position over the history positions (mean over heads), summed per item. The
  same weights explain every item, so this is a cheap view of what the model read, not a faithful attribution.
- "topics": for LDA. The user's topic shares θ_uk and the item's probability in each topic φ_ki; a history
  item's contribution is its share of the score through its topic responsibilities (they sum to the score
  less the prior's part).
"auto" picks "attention" where the model has `attention_weights`, else "leave_one_out" (also for SASRec: exact and
measured faithful; ask for "attention" explicitly).

`deletion_check` measures faithfulness: does removing the top explaining items lower the score more than
removing as many random history items?
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from genrec.data.interactions import Histories

METHODS = ("auto", "leave_one_out", "gradient", "attention", "topics")


@dataclass(frozen=True)
class Explanation:
    """item: the explained item index; score: the model's score for it; contributions: (history item index,
    contribution) pairs, largest first; method: the method used; topics: for "topics", (topic, user share θ_uk,
    p(item | topic) φ_ki) triples by θ_uk · φ_ki, largest first."""

    item: int
    score: float
    contributions: list[tuple[int, float]]
    method: str
    topics: list[tuple[int, float, float]] | None = None

    def to_frame(self, item_ids=None) -> pd.DataFrame:
        """`rank, history_item, contribution` (raw ids where an IdMap is given)."""
        items = [i for i, _ in self.contributions]
        return pd.DataFrame({
            "rank": np.arange(1, len(items) + 1),
            "history_item": items if item_ids is None else list(item_ids.raw[np.asarray(items, np.int64)]),
            "contribution": [c for _, c in self.contributions],
        })


def explain(model, histories: Histories, user_row: int, item: int, top: int | None = 3,
            method: str = "auto") -> Explanation:
    """Explain `item` for the user in row `user_row` of `histories` (top=None keeps every history item)."""
    return explain_many(model, histories[[user_row]], np.array([item]), top, method)[0]


def explain_many(model, histories: Histories, items: Sequence[int] | np.ndarray, top: int | None = 3,
                 method: str = "auto", batch_size: int = 512) -> list[Explanation]:
    """One explanation per user row: items[u] is the item explained for row u. Rows are scored `batch_size`
    at a time."""
    items = np.asarray(items, dtype=np.int64)
    if len(items) != histories.n_users:
        raise ValueError(f"items has {len(items)} entries, histories has {histories.n_users} users")
    if len(items) and (items.min() < 0 or items.max() >= histories.n_items):
        raise ValueError(f"items must be item indices in 0..{histories.n_items - 1}")
    method = resolve_method(model, method)
    topics = None
    if method == "leave_one_out":
        scores, per_entry = _leave_one_out(model, histories, items, batch_size)
    elif method == "gradient":
        scores, per_entry = _gradient_x_input(model, histories, items)
    elif method == "topics":
        scores, per_entry, topics = _topics(model, histories, items, top)
    else:
        return _attention(model, histories, items, top)
    m = histories.matrix
    out = []
    for u in range(histories.n_users):
        lo, hi = m.indptr[u], m.indptr[u + 1]
        out.append(Explanation(int(items[u]), float(scores[u]), _ranked(m.indices[lo:hi], per_entry[lo:hi], top),
                               method, None if topics is None else topics[u]))
    return out


def resolve_method(model, method: str) -> str:
    """The method "auto" stands for with this model; checks that an explicit one applies."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if method == "auto":
        return "attention" if hasattr(model, "attention_weights") else "leave_one_out"
    if method == "attention" and not hasattr(model, "attention_weights") and _attention_block(model) is None:
        raise ValueError(f"method='attention' does not apply to {type(model).__name__} (it has no self-attention "
                         "blocks and no attention_weights)")
    needs = {"gradient": ("module_", "_score_input"), "topics": ("transform", "topic_item_", "token_topics")
             }.get(method, ())
    missing = [a for a in needs if not hasattr(model, a)]
    if missing:
        raise ValueError(f"method={method!r} does not apply to {type(model).__name__} (it has no {missing[0]})")
    return method


def _ranked(history_items: np.ndarray, contributions: np.ndarray, top: int | None) -> list[tuple[int, float]]:
    order = np.argsort(-contributions, kind="stable")[:top]
    return [(int(history_items[j]), float(contributions[j])) for j in order]


# leave-one-out and removal of item sets ---------------------------------------------------------------------
def without_items(histories: Histories, owners: np.ndarray, removed: np.ndarray) -> Histories:
    """A stack of modified histories: row r is histories[owners[r]] without the items in removed[r]
    ((R, m) item indices, -1 pads). Sequences, where present, lose every occurrence of those items."""
    owners = np.asarray(owners, dtype=np.int64)
    removed = np.asarray(removed, dtype=np.int64).reshape(len(owners), -1)
    base = histories[owners]
    m = base.matrix
    rows = np.repeat(np.arange(len(owners)), np.diff(m.indptr))
    keep = ~(m.indices[:, None] == removed[rows]).any(1)
    matrix = sp.csr_matrix((m.data[keep], m.indices[keep], _indptr(rows[keep], len(owners))), shape=m.shape)
    seq_indptr = seq_items = None
    if base.has_order:
        seq_rows = np.repeat(np.arange(len(owners)), np.diff(base.seq_indptr))
        seq_keep = ~(base.seq_items[:, None] == removed[seq_rows]).any(1)
        seq_items = base.seq_items[seq_keep]
        seq_indptr = _indptr(seq_rows[seq_keep], len(owners))
    return Histories(matrix, seq_indptr, seq_items, base.user_ids)


def _indptr(rows: np.ndarray, n_rows: int) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n_rows))]).astype(np.int64)


def scores_of(model, histories: Histories, items: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """(n_rows,) float64: the score of items[r] for history row r, scoring `batch_size` rows per call."""
    out = np.empty(histories.n_users, np.float64)
    for start in range(0, histories.n_users, batch_size):
        stop = min(start + batch_size, histories.n_users)
        s = np.asarray(model.score(histories[start:stop]))
        out[start:stop] = s[np.arange(stop - start), items[start:stop]]
    return out


def _leave_one_out(model, histories: Histories, items: np.ndarray, batch_size: int):
    """Scores (n_users,) and per-entry contributions (nnz,), CSR order: score - score without that entry."""
    m = histories.matrix
    lengths = np.diff(m.indptr)
    owners = np.repeat(np.arange(histories.n_users), lengths + 1)
    # row 0 of each user's block removes nothing, row j + 1 removes the user's j-th history item
    first = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]])
    removed = np.full(len(owners), -1, np.int64)
    removed[np.delete(np.arange(len(owners)), first)] = m.indices
    stacked = scores_of(model, without_items(histories, owners, removed), items[owners], batch_size)
    base = stacked[first]
    drops = np.delete(np.repeat(base, lengths + 1) - stacked, first)
    return base, drops


# gradient x input -----------------------------------------------------------------------------------------
def _gradient_x_input(model, histories: Histories, items: np.ndarray):
    """Per-entry x_j · ∂score/∂x_j through the model's torch module, one backward pass for the batch."""
    import torch

    model._check_fitted(histories)
    batch = model._score_input(histories)
    if not hasattr(batch, "values") or len(batch.values) != histories.matrix.nnz:
        raise ValueError(f"{type(model).__name__} does not score a sparse bag of items; use leave_one_out")
    module = model.module_
    was_training = module.training
    module.eval()
    values = batch.values.clone().float().requires_grad_(True)
    with torch.enable_grad():
        out = module.score(batch._replace(values=values))
        picked = out[torch.arange(len(items), device=out.device), torch.from_numpy(items).to(out.device)]
        (grad,) = torch.autograd.grad(picked.sum(), values, allow_unused=True)
    module.train(was_training)
    if grad is None:
        raise ValueError(f"{type(model).__name__}'s scores do not depend on input values; use leave_one_out")
    return picked.detach().double().cpu().numpy(), (grad * values).detach().double().cpu().numpy()


# topics (LDA) ---------------------------------------------------------------------------------------------
def _topics(model, histories: Histories, items: np.ndarray, top: int | None):
    theta = model.transform(histories)
    phi = model.topic_item_[:, items].T.astype(np.float64)  # (n_users, K): φ_k,item per user's item
    per_topic = theta * phi
    scores = per_topic.sum(1)
    q = model.token_topics(histories)
    m = histories.binary()
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    denom = model.n_topics * model.doc_topic_prior_ + np.diff(m.indptr)
    per_entry = (q * phi[rows]).sum(1) / denom[rows]
    order = np.argsort(-per_topic, axis=1, kind="stable")[:, :top]
    topics = [[(int(k), float(theta[u, k]), float(phi[u, k])) for k in row] for u, row in enumerate(order)]
    return scores, per_entry, topics


# attention (SASRec, BERT4Rec and other models exposing attention_weights) -------------------------------------
def _attention(model, histories: Histories, items: np.ndarray, top: int | None) -> list[Explanation]:
    """Attention weights per history position, summed per item."""
    scores = scores_of(model, histories, items)
    per_user = (_block_attention(model, histories) if not hasattr(model, "attention_weights")
                else _aligned_attention(model, histories))
    out = []
    for u, (seq, w) in enumerate(per_user):
        uniq, inv = np.unique(seq, return_inverse=True)
        per_item = np.bincount(inv, weights=w, minlength=len(uniq))
        out.append(Explanation(int(items[u]), float(scores[u]), _ranked(uniq, per_item, top), "attention"))
    return out


def _aligned_attention(model, histories: Histories) -> list[tuple[np.ndarray, np.ndarray]]:
    """(items, weights) per user from `attention_weights(histories)`: one array per user (or (n_users, L),
    left-padded) whose last entries align with the end of the user's sequence."""
    weights = model.attention_weights(histories)
    out = []
    for u in range(histories.n_users):
        seq, w = histories.sequence(u), np.asarray(weights[u], dtype=np.float64)
        n = min(len(seq), len(w))
        out.append((seq[len(seq) - n:], w[len(w) - n:]))
    return out


def _attention_block(model):
    """The last self-attention block of a Transformer sequence model's module, or None."""
    blocks = getattr(getattr(model, "module_", None), "blocks", None)
    if not blocks or not hasattr(model, "_score_input"):
        return None
    last = blocks[-1]
    return last if all(hasattr(last, a) for a in ("qkv", "norm1", "n_heads")) else None


def _block_attention(model, histories: Histories) -> list[tuple[np.ndarray, np.ndarray]]:
    """(items, weights) per user: the last block's attention (softmax(q k^T / sqrt(d_head)), mean over heads) of
    the final position over every position holding an item (token 1..n_items is item token - 1)."""
    import torch

    block, module = _attention_block(model), model.module_
    seen = {}
    hook = block.register_forward_pre_hook(lambda _, args: seen.update(x=args[0], mask=args[1]))
    tokens = model._score_input(histories)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            module.score(tokens.to(next(module.parameters()).device))
            x, mask = seen["x"], seen["mask"]
            b, t, d = x.shape
            qkv = block.qkv(block.norm1(x)).view(b, t, 3, block.n_heads, d // block.n_heads)
            q, k = qkv[:, -1:, 0].transpose(1, 2), qkv[:, :, 1].transpose(1, 2)  # (B, H, 1, dh), (B, H, T, dh)
            logits = (q @ k.transpose(-1, -2)) / np.sqrt(d // block.n_heads)
            logits = logits.masked_fill(~mask[:, :, -1:, :], float("-inf"))
            weights = logits.softmax(-1).mean(1)[:, 0].double().cpu().numpy()  # (B, T)
    finally:
        hook.remove()
        module.train(was_training)
    tokens = tokens.cpu().numpy()
    is_item = (tokens >= 1) & (tokens <= model.n_items_)
    return [(tokens[u, is_item[u]] - 1, weights[u, is_item[u]]) for u in range(len(tokens))]


# faithfulness ----------------------------------------------------------------------------------------------
def deletion_check(model, histories: Histories, top: int = 3, n_random: int = 10, method: str = "auto",
                   seed: int = 0, batch_size: int = 512) -> pd.DataFrame:
    """For each user with at least 2·top history items: explain the model's first recommendation, then compare
    the score drop when the `top` explaining items are removed with the mean drop over `n_random` draws of
    `top` random history items. One row per user: `row, item, drop_explained, drop_random, faithful`."""
    lengths = histories.lengths()
    rows = np.flatnonzero(lengths >= 2 * top)
    h = histories[rows]
    items = model.recommend(h, k=1, batch_size=batch_size).items[:, 0]
    explanations = explain_many(model, h, items, top, method, batch_size)
    rng = np.random.default_rng(seed)
    removed = np.full((len(rows), 1 + n_random, top), -1, np.int64)
    for u, e in enumerate(explanations):
        removed[u, 0, : len(e.contributions)] = [i for i, _ in e.contributions]
        hist = h.matrix.indices[h.matrix.indptr[u] : h.matrix.indptr[u + 1]]
        keys = rng.random((n_random, len(hist)))
        removed[u, 1:] = hist[np.argsort(keys, axis=1)[:, :top]]
    owners = np.repeat(np.arange(len(rows)), 2 + n_random)
    sets = np.concatenate([np.full((len(rows), 1, top), -1), removed], axis=1).reshape(-1, top)
    s = scores_of(model, without_items(h, owners, sets), items[owners], batch_size).reshape(len(rows), -1)
    drops = s[:, :1] - s[:, 1:]
    frame = pd.DataFrame({"row": rows, "item": items, "drop_explained": drops[:, 0],
                          "drop_random": drops[:, 1:].mean(1)})
    frame["faithful"] = frame["drop_explained"] > frame["drop_random"]
    return frame


# the `genrec explain` command ------------------------------------------------------------------------------
def bundle_user_history(bundle, user) -> list:
    """A known user's training history (raw item ids, oldest first) from a bundle saved with `train=`."""
    if bundle.histories is None or bundle.user_ids is None or bundle.item_ids is None:
        raise ValueError(f"{bundle.path}: the bundle has no training histories; save it with train=... ")
    row = int(bundle.user_ids.index(np.array([user], dtype=object))[0])
    return list(bundle.item_ids.raw[bundle.histories.sequence(row)])


def explain_command_rows(bundle, user_history: Sequence, item, top: int = 3, method: str = "auto") -> list[dict]:
    """Rows for `genrec explain`: the recommended `item` (raw id) explained for a user whose history is the
    raw item ids `user_history` (oldest first). Each row: rank, history_item, title (when the bundle's item
    attributes have one), contribution, item, score, method."""
    if bundle.item_ids is None:
        raise ValueError(f"{bundle.path}: the bundle has no item id map; save it with train=...")
    # object arrays: ids typed on a command line are strings; IdMap.index converts them to numeric ids
    history = bundle.item_ids.index(np.array(list(user_history), dtype=object))
    target = int(bundle.item_ids.index(np.array([item], dtype=object))[0])
    h = Histories.from_lists([history], bundle.model.n_items_)
    e = explain(bundle.model, h, 0, target, top, method)
    attrs = bundle.item_attributes
    titles = attrs["title"] if attrs is not None and "title" in attrs.columns else None
    raw = bundle.item_ids.raw
    return [{"rank": r, "history_item": _plain(raw[i]), "title": None if titles is None else _plain(titles.iloc[i]),
             "contribution": c, "item": _plain(raw[target]), "score": e.score, "method": e.method}
            for r, (i, c) in enumerate(e.contributions, start=1)]


def _plain(value):
    """numpy scalars as Python values (for JSON)."""
    return value.item() if isinstance(value, np.generic) else value
