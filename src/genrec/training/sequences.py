"""What the sequence models (SASRec, BERT4Rec, GRU4Rec) share: windows of users' time-ordered histories as token
batches, item attributes as extra input tokens, and sampling continuations of a history. (Their common
Recommender base class is genrec.models.sequence_base.SequenceRecommender.)

Tokens: item index i is token i + 1; token 0 is padding; BERT4Rec's [MASK] is token n_items + 1. A window is the
last `length` tokens of (part of) a user's sequence. Left padding (the default, Transformers) puts the most recent
item in the last column whatever the length; right padding (RNNs with packed sequences) puts the oldest item in
the first column. Every step here is vectorised over the events; building a batch touches numpy arrays only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from genrec.data.interactions import DataError, Histories

PAD = 0


# windows ------------------------------------------------------------------------------------------------------
def ordered_items(histories: Histories) -> tuple[np.ndarray, np.ndarray]:
    """(indptr (n_users + 1,), items) of the time-ordered sequences; without order, the CSR rows' items."""
    if histories.has_order:
        return np.asarray(histories.seq_indptr, np.int64), np.asarray(histories.seq_items, np.int64)
    m = histories.matrix
    return m.indptr.astype(np.int64), m.indices.astype(np.int64)


def windows(items: np.ndarray, starts: np.ndarray, ends: np.ndarray, length: int, pad_side: str = "left",
            shift: int = 1) -> np.ndarray:
    """(B, length) int64 tokens: the last `length` items of items[starts[b]:ends[b]], plus `shift`, padded with 0.

    pad_side='left' right-aligns each window (most recent item in the last column); 'right' left-aligns it."""
    n = np.minimum(ends - starts, length)[:, None]
    cols = np.arange(length)[None, :]
    if pad_side == "left":
        src, valid = ends[:, None] - length + cols, cols >= length - n
    elif pad_side == "right":
        src, valid = ends[:, None] - n + cols, cols < n
    else:
        raise ValueError(f"pad_side must be 'left' or 'right', got {pad_side!r}")
    if len(items) == 0:
        return np.zeros((len(starts), length), np.int64)
    return np.where(valid, items[np.clip(src, 0, len(items) - 1)] + shift, PAD)


def crop(tokens: np.ndarray, pad_side: str = "left") -> np.ndarray:
    """Drop the columns that are padding in every row (keeping at least one column)."""
    width = max(int((tokens != PAD).sum(axis=1).max(initial=0)), 1)
    return tokens[:, tokens.shape[1] - width :] if pad_side == "left" else tokens[:, :width]


def history_tokens(histories: Histories, length: int, pad_side: str = "left") -> np.ndarray:
    """(n_users, <= length) tokens of each user's last `length` items, cropped to the longest row."""
    indptr, items = ordered_items(histories)
    return crop(windows(items, indptr[:-1], indptr[1:], length, pad_side), pad_side)


class SequenceWindows:
    """Training examples: windows of `length` tokens over each user's sequence, ending at the last item and then
    every `stride` items earlier, so long histories are covered by several windows (SASRec and GRU4Rec use
    length = max_len + 1 and stride = max_len: each event is predicted once). Windows with fewer than
    `min_tokens` tokens are dropped. `batch(indices)` gives (B, T) int64 tokens cropped to the longest window.

    `plan_batches` groups windows of similar length (the Trainer asks for it): within each run of
    `bucket_batches` batches of the shuffled order, windows are sorted by length, cut into batches, and the
    batches are shuffled again, so little compute goes to padding and the batch count is unchanged."""

    def __init__(self, histories: Histories, length: int, stride: int, pad_side: str = "left", min_tokens: int = 2,
                 bucket_batches: int = 32):
        indptr, self.items = ordered_items(histories)
        starts, ends = indptr[:-1], indptr[1:]
        n = ends - starts
        per_user = np.where(n >= min_tokens, 1 + np.maximum(n - length + stride - 1, 0) // stride, 0)
        user = np.repeat(np.arange(len(starts)), per_user)
        k = np.arange(len(user)) - np.repeat(np.cumsum(per_user) - per_user, per_user)
        self.ends = ends[user] - k * stride
        self.starts = np.maximum(starts[user], self.ends - length)
        keep = self.ends - self.starts >= min_tokens
        self.starts, self.ends, self.users = self.starts[keep], self.ends[keep], user[keep]
        self.length, self.pad_side, self.bucket_batches = length, pad_side, bucket_batches

    def __len__(self) -> int:
        return len(self.starts)

    def lengths(self) -> np.ndarray:
        return self.ends - self.starts

    def batch(self, indices: np.ndarray) -> torch.Tensor:
        tokens = windows(self.items, self.starts[indices], self.ends[indices], self.length, self.pad_side)
        return torch.from_numpy(crop(tokens, self.pad_side))

    def plan_batches(self, order: np.ndarray, batch_size: int) -> list[np.ndarray]:
        rng = np.random.default_rng(order[:16].tolist())
        chunk = batch_size * self.bucket_batches
        batches = []
        for start in range(0, len(order), chunk):
            part = order[start : start + chunk]
            part = part[np.argsort(self.lengths()[part], kind="stable")]
            batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]


def next_item_pairs(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split (B, T) windows into inputs (B, T-1) and targets (B, T-1); a target is 0 where there is no input."""
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    return inputs, targets * (inputs != PAD)


def mask_items(tokens: torch.Tensor, mask_prob: float, mask_token: int) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT4Rec's cloze task: each item token becomes [MASK] with probability mask_prob (every window gets at
    least one: its most recent item when the draw picked none). Returns (inputs, labels); labels are 0 except
    at the masked positions. Draws from torch's global generator, which the Trainer seeds per epoch."""
    valid = tokens != PAD
    chosen = (torch.rand(tokens.shape, device=tokens.device) < mask_prob) & valid
    last = torch.zeros_like(valid)
    last[torch.arange(len(tokens), device=tokens.device), (valid.cumsum(1)).argmax(1)] = True
    chosen |= last & valid & ~chosen.any(1, keepdim=True)
    return tokens.masked_fill(chosen, mask_token), tokens * chosen


# the full-softmax loss ----------------------------------------------------------------------------------------
LOG2_E, LN_2 = 1.0 / math.log(2.0), math.log(2.0)


class LinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of softmax(hidden @ weight.T) against `targets`, `chunk_rows` rows at a time, never
    holding the (rows, n_items) logits. Per chunk, three matrix products and one elementwise pass over one reused
    (n_items, chunk) buffer (a fresh one would fault its pages in), in the faster orientation of these thin
    products: the logits in bits (base 2), turned in place into 2 ** (bits - max) (exp2 is about twice as fast as
    exp on CPU) and summed per row; exp.T @ weight, each row's unnormalised gradient w.r.t. hidden; and the
    gradient w.r.t. weight, exp @ (hidden / sum). (Appending a column of ones to weight, so that the second product
    also gives the sums, measured slower than the separate sum.) The target's -1 terms are taken once for all rows
    after the loop, and the 1/rows of the mean is folded into the small factors. The same value and gradients as
    F.cross_entropy(hidden @ weight.T, targets) up to float rounding. With low_precision the products and the
    exponentials are bfloat16 (oneDNN accumulates in float32; sums, loss and gradients are float32): on CPUs with
    bfloat16 instructions about twice as fast, gradients within ~0.2% of float32's."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu", cast_inputs=torch.float32)  # the dtypes are chosen here, not by autocast
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                chunk_rows: int, low_precision: bool = False) -> torch.Tensor:
        n, n_items = hidden.shape[0], weight.shape[0]
        rows = min(chunk_rows, n)
        grad_hidden, grad_weight = torch.empty_like(hidden), torch.zeros_like(weight)
        bits, tops, totals = hidden * LOG2_E, hidden.new_zeros(n), hidden.new_empty(n)
        # |logit| <= |h| |w|: within 100 bits, 2 ** bits neither overflows (even summed) nor underflows, so the
        # usual subtraction of each row's largest logit (two passes over the chunk) is not needed
        shift = float(hidden.norm(dim=1).max() * weight.norm(dim=1).max()) * LOG2_E > 100.0
        dtype = torch.bfloat16 if low_precision else hidden.dtype
        w, bits = weight.to(dtype), bits.to(dtype)  # (copies only in bfloat16)
        buffer = hidden.new_empty(n_items * rows, dtype=dtype)
        for start in range(0, n, rows):
            chunk = slice(start, min(start + rows, n))
            c = chunk.stop - start
            exp = buffer[: n_items * c].view(n_items, c)
            torch.mm(w, bits[chunk].T, out=exp)
            if shift:
                tops[chunk] = exp.amax(0)
                exp.sub_(tops[chunk].to(dtype))
            exp.exp2_()
            torch.sum(exp, 0, dtype=torch.float32, out=totals[chunk])
            scale = totals[chunk, None].reciprocal().mul_(1.0 / n)  # (c, 1): d mean loss / d exp, per row
            if low_precision:  # bfloat16 products (float32 accumulation inside), float32 gradients
                grad_hidden[chunk] = torch.mm(exp.T, w).float().mul_(scale)
                grad_weight.add_(torch.mm(exp, (hidden[chunk] * scale).to(dtype)))
                continue
            torch.mm(exp.T, w, out=grad_hidden[chunk])
            grad_hidden[chunk].mul_(scale)
            grad_weight.addmm_(exp, hidden[chunk] * scale)
        target_weight = weight[targets]
        losses = totals.log_() + tops * LN_2 - (hidden * target_weight).sum(1)  # log-sum-exp - target logit
        grad_hidden.sub_(target_weight, alpha=1.0 / n)  # d loss / d logits = softmax - onehot(target)
        grad_weight.index_add_(0, targets, hidden, alpha=-1.0 / n)
        ctx.save_for_backward(grad_hidden, grad_weight)
        return losses.mean()

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss: torch.Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        if grad_loss.numel() == 1 and float(grad_loss) == 1.0:  # the usual case: spare two passes
            return grad_hidden, grad_weight, None, None, None
        return grad_hidden * grad_loss, grad_weight * grad_loss, None, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         chunk_rows: int | None = None, low_precision: bool = False) -> torch.Tensor:
    """F.cross_entropy(hidden @ weight.T, targets) (mean over rows) without materialising the logits.

    hidden: (P, dim) float; weight: (n_classes, dim); targets: (P,) int64 in [0, n_classes); low_precision: the
    three matrix products and the exponentials in bfloat16 (float32 accumulation, gradients and loss);
    chunk_rows: rows per chunk, by default 64 in float32 and 128 in bfloat16 (the fastest on Beauty's 12,101
    items: 31 and 20 ms per 800-row batch, against 35-51 and 22-34 ms at 16-800 rows)."""
    if len(targets) == 0:
        return (hidden.sum() + weight.sum()) * 0.0
    chunk_rows = chunk_rows or (128 if low_precision else 64)
    return LinearCrossEntropy.apply(hidden.contiguous(), weight.contiguous(), targets, chunk_rows, low_precision)


# item attributes ----------------------------------------------------------------------------------------------
@dataclass
class FeatureIndex:
    """Item attribute values as tokens. vocab[feature] lists that feature's values; value tokens index the
    concatenated vocabularies. Item i's tokens are values[offsets[i]:offsets[i+1]] with weights 1/(its number of
    values of that feature), so each feature adds the mean of its values' embeddings (tags: `a|b|c`)."""

    vocab: dict[str, list[str]]
    offsets: np.ndarray  # (n_items + 1,) int64
    values: np.ndarray  # (nnz,) int64
    weights: np.ndarray  # (nnz,) float32

    @property
    def n_values(self) -> int:
        return sum(len(v) for v in self.vocab.values())

    @classmethod
    def build(cls, attributes: pd.DataFrame | None, features: list[str], n_items: int,
              source: str = "train") -> FeatureIndex:
        """From `Interactions.item_attributes` (row i describes item i); missing values give no token."""
        if attributes is None:
            raise DataError(f"{source}: item_features={features!r} but the data has no item attributes")
        vocab, parts, base = {}, [], 0
        for f in features:
            if f not in attributes.columns:
                raise DataError(f"{source}: item_features names {f!r}, not an item attribute column "
                                f"(columns: {', '.join(map(str, attributes.columns))})")
            col = attributes[f].iloc[:n_items]
            pairs = col[col.notna()].astype(str).str.split("|").explode().str.strip()
            pairs = pairs[pairs != ""]
            values = sorted(pairs.unique())
            items = pairs.index.to_numpy(np.int64)
            counts = np.bincount(items, minlength=n_items)
            parts.append((items, base + pd.Index(values).get_indexer(pairs.to_numpy()), 1.0 / counts[items]))
            vocab[f], base = values, base + len(values)
        items, tokens, weights = (np.concatenate(x) for x in zip(*parts))
        order = np.argsort(items, kind="stable")
        offsets = np.concatenate([[0], np.cumsum(np.bincount(items, minlength=n_items))]).astype(np.int64)
        return cls(vocab, offsets, tokens[order].astype(np.int64), weights[order].astype(np.float32))


class ItemEmbedding(nn.Module):
    """Token embeddings (n_tokens, dim); with a FeatureIndex, item tokens 1..n_items also get the sum over
    features of the mean embedding of their attribute values, so an item with few events is represented by its
    category and tags. Networks name this module `items` (its buffers are saved as `items.feature_*`)."""

    def __init__(self, n_tokens: int, dim: int, features: FeatureIndex | None = None, std: float | None = None):
        """std: of the normal initial weights (default dim**-0.5)."""
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_tokens, dim) * (dim**-0.5 if std is None else std))
        self.has_features = features is not None
        if features is not None:
            self.attributes = nn.Parameter(torch.randn(max(features.n_values, 1), dim) * dim**-0.5)
            self.register_buffer("feature_offsets", torch.from_numpy(features.offsets))
            self.register_buffer("feature_values", torch.from_numpy(features.values))
            self.register_buffer("feature_weights", torch.from_numpy(features.weights))

    def table(self) -> torch.Tensor:
        """(n_tokens, dim): the embedding of every token, attributes included."""
        if not self.has_features:
            return self.weight
        bags = F.embedding_bag(self.feature_values, self.attributes, self.feature_offsets, mode="sum",
                               per_sample_weights=self.feature_weights, include_last_offset=True)
        n = bags.shape[0]
        return torch.cat([self.weight[:1], self.weight[1 : n + 1] + bags, self.weight[n + 1 :]])


# generation ---------------------------------------------------------------------------------------------------
def generate_continuations(model, histories: Histories, n_steps: int, temperature: float = 1.0,
                           top_k: int | None = None, seed: int = 0, exclude_seen: bool = True) -> list[np.ndarray]:
    """Sample continuations: at each step, the next item is drawn from softmax(scores / temperature) over the
    model's scores for the history so far (restricted to the `top_k` best; temperature 0 takes the best item),
    then appended to the history. exclude_seen forbids history items and items generated before.

    Returns one (n_steps,) int64 array of item indices per user. Seeded: the same seed gives the same items."""
    if n_steps < 0 or temperature < 0 or (top_k is not None and top_k < 1):
        raise ValueError(f"need n_steps >= 0, temperature >= 0 and top_k >= 1, got {n_steps}, {temperature}, "
                         f"{top_k}")
    if exclude_seen and histories.n_users and histories.lengths().max() + n_steps > histories.n_items:
        raise ValueError(f"n_steps={n_steps} exceeds the items left unseen by the longest history")
    generator = torch.Generator().manual_seed(seed)
    out = np.zeros((histories.n_users, n_steps), np.int64)
    for step in range(n_steps):
        scores = torch.from_numpy(np.array(model.score(histories), dtype=np.float32))
        if exclude_seen:
            seen = histories.matrix
            scores[np.repeat(np.arange(seen.shape[0]), np.diff(seen.indptr)), seen.indices] = -np.inf
        out[:, step] = sample_items(scores, temperature, top_k, generator)
        histories = append_items(histories, out[:, step])
    return list(out)


def sample_items(scores: torch.Tensor, temperature: float, top_k: int | None,
                 generator: torch.Generator) -> np.ndarray:
    """(B,) one item per row of (B, n_items) scores (-inf: forbidden)."""
    if top_k is not None and top_k < scores.shape[1]:
        kth = torch.topk(scores, top_k, dim=1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, -np.inf)
    if temperature == 0:
        return scores.argmax(1).numpy()
    probs = torch.softmax(scores.double() / temperature, dim=1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0].numpy()


def append_items(histories: Histories, items: np.ndarray) -> Histories:
    """The histories with one more (most recent) item per user."""
    indptr, seq = ordered_items(histories)
    new_seq = np.insert(seq, indptr[1:], items)
    new_indptr = indptr + np.arange(len(indptr))
    n = histories.n_users
    added = sp.csr_matrix((np.ones(n, np.float32), (np.arange(n), items)), shape=histories.matrix.shape)
    matrix = histories.matrix.maximum(added).tocsr()
    return Histories(matrix, new_indptr, new_seq, histories.user_ids)
