"""Two-stage scoring of a Mult-VAE/DAE: a shortlist from a low-rank copy of the output layer, re-ranked exactly.

Nearly all of a request's cost is the output layer, W (n_items, d) and its bias: d * n_items multiply-adds per
user (600 x 40,981 = 24.6 M on Gowalla), and at small batches the time goes into reading W's 98 MB. The
truncated SVD W ≈ U_r diag(s_r) V_r^T gives approximate logits for r * (d + n_items) multiply-adds (rank 64:
2.7 M, 10.5 MB of weights). So, per batch of requests:

1. the network up to the output layer, as the model scores: h (B, d), the output layer's input;
2. approximate logits h W_r^T + bias, with W_r = W V_r V_r^T the best rank-r approximation of W (V_r: the top r
   eigenvectors of W^T W, W's right singular vectors), computed as (h V_r) (W V_r)^T (in int8 from three rows
   on, see `approximate`); the row's history (exclude_seen) and the items outside its candidate mask get -inf;
   its `candidates` best items are the shortlist;
3. exact float32 logits for the shortlist only, W[shortlist] h + bias[shortlist]; the top k of these, with
   these exact scores.

The scores returned are the float32 model's own; the items are the float32 model's top k whenever they are all
in the shortlist, which is what `candidates` buys (agreement on Gowalla: benchmarks/results/serving.md).
`TwoStageScorer.score_rows` is a drop-in for `ServedModel.score_rows`.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from genrec.models.multvae import MultVAENetwork
from genrec.serving.served import ScoringRow, ServedModel, per_row_top
from genrec.training.data import SparseRows


def parse_rerank(spec: str | None) -> tuple[int, int] | None:
    """'RANK:CANDIDATES' (e.g. '64:128') -> (64, 128); None, '' or 'none' -> None."""
    if not spec or spec == "none":
        return None
    try:
        rank, candidates = (int(x) for x in spec.split(":"))
    except ValueError:
        raise ValueError(f"rerank must be RANK:CANDIDATES (e.g. 64:128) or none, got {spec!r}") from None
    if rank < 1 or candidates < 1:
        raise ValueError(f"rerank: rank and candidates must be >= 1, got {spec!r}")
    return rank, candidates


def _int8_linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Module:
    """x -> x @ weight.T + bias with int8 weights (one scale per output row) and activations quantised per call
    (fbgemm's dynamic quantised Linear)."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao
        return quantize_dynamic(nn.Sequential(layer), {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


class TwoStageScorer:
    """`score_rows` as `served`'s, with a rank-`rank` shortlist of `candidates` items per row re-scored exactly.
    Mult-VAE and Mult-DAE with float32 weights only (a ValueError names the model otherwise)."""

    def __init__(self, served: ServedModel, rank: int = 64, candidates: int = 128):
        net = getattr(served.model, "module_", None)
        if not isinstance(net, MultVAENetwork) or not isinstance(net.decoder[-1], torch.nn.Linear) \
                or not isinstance(net.decoder[-1].weight, torch.Tensor):
            raise ValueError(f"rerank: {type(served.model).__name__} is not a float32 Mult-VAE or Mult-DAE "
                             "(serve int8 weights without rerank)")
        layer = net.decoder[-1]
        n_items, d = layer.weight.shape
        if not 1 <= rank < min(n_items, d):
            raise ValueError(f"rerank: rank must be in 1..{min(n_items, d) - 1} for a {d} -> {n_items} layer, "
                             f"got {rank}")
        if candidates < 1:
            raise ValueError(f"rerank: candidates must be >= 1, got {candidates}")
        self.served, self.net, self.rank, self.candidates = served, net.eval(), rank, candidates
        self.n_items = n_items
        self.weight = layer.weight.detach()  # (n_items, d), shared with the model
        self.bias = layer.bias.detach()
        # W V_r V_r^T is the truncated SVD U_r diag(s_r) V_r^T, with V_r the top eigenvectors of W^T W (d, d)
        _, vectors = torch.linalg.eigh((self.weight.T @ self.weight).double())
        top = vectors[:, -rank:].flip(1).float()  # (d, rank), largest singular value first
        self.project = top.contiguous()  # (d, rank)
        self.expand = (self.weight @ top).T.contiguous()  # (rank, n_items)
        self.expand_int8 = _int8_linear(self.expand.T, self.bias)

    def approximate(self, h: torch.Tensor) -> torch.Tensor:
        """(B, n_items) low-rank logits (h V_r) (W V_r)^T + bias. For one or two rows a float32 product (a
        matrix-vector kernel); from three rows fbgemm's int8 kernel, 2-5x faster there than MKL's float32 GEMM,
        which handles a few rows against 41k columns badly (the shortlist tolerates the ~1% error: same agreement
        on Gowalla)."""
        low = h @ self.project
        return torch.addmm(self.bias, low, self.expand) if len(low) < 3 else self.expand_int8(low)

    def close(self) -> None:
        """Nothing to release (the scorer lives in the server's process); here for the app's model swaps."""

    def _input(self, rows: list[ScoringRow]) -> SparseRows:
        """The rows' histories as the model scores them: binary, each item once per row, items sorted."""
        lengths = np.fromiter((len(r.items) for r in rows), np.int64, len(rows))
        owners = np.repeat(np.arange(len(rows), dtype=np.int64), lengths)
        items = np.concatenate([r.items for r in rows]).astype(np.int64) if lengths.sum() else np.zeros(0, np.int64)
        if len(items) and (items.min() < 0 or items.max() >= self.n_items):
            raise ValueError(f"item index out of range 0..{self.n_items - 1} in a history")
        keys = np.unique(owners * self.n_items + items)
        owners, items = keys // self.n_items, keys % self.n_items
        offsets = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(np.bincount(owners, minlength=len(rows)), out=offsets[1:])
        return SparseRows(torch.from_numpy(items), torch.from_numpy(offsets), torch.ones(len(items)),
                          torch.from_numpy(owners), torch.arange(len(rows)))

    def hidden(self, rows: list[ScoringRow]) -> torch.Tensor:
        """(B, d): the output layer's input for each row's history (the posterior mean, as model.score)."""
        z = self.net.encode(self._input(rows))[0]
        for i, layer in enumerate(self.net.decoder[:-1]):
            z = layer(z if i == 0 else torch.tanh(z))
        return z if len(self.net.decoder) == 1 else torch.tanh(z)

    def shortlist(self, h: torch.Tensor, rows: list[ScoringRow], size: int) -> torch.Tensor:
        """(B, size) int64: each row's best items by the low-rank logits, among those it may get."""
        approx = self.approximate(h)
        seen = [i * self.n_items + r.items for i, r in enumerate(rows) if r.exclude_seen and len(r.items)]
        if seen:
            approx.view(-1).index_fill_(0, torch.from_numpy(np.concatenate(seen).astype(np.int64)), -torch.inf)
        for i, row in enumerate(rows):
            if row.allowed is not None:
                approx[i].masked_fill_(torch.from_numpy(~row.allowed), -torch.inf)
        values, items = torch.topk(approx, size, dim=1)
        return items.masked_fill_(values == -torch.inf, -1)  # -1: fewer than `size` items are allowed

    def score_rows(self, rows: list[ScoringRow]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(items, scores) per row, best first, as `ServedModel.score_rows`: exact float32 scores, history
        items dropped when exclude_seen, only allowed items, at most k."""
        k_max = min(max(r.k for r in rows), self.n_items)
        size = min(max(self.candidates, k_max), self.n_items)
        with torch.no_grad():
            h = self.hidden(rows)
            short = self.shortlist(h, rows, size)
            safe = short.clamp_min(0)
            flat = safe.view(-1)
            gathered = torch.index_select(self.weight, 0, flat).view(len(rows), size, -1)  # (B, size, d)
            exact = torch.index_select(self.bias, 0, flat).view(len(rows), size)
            for i in range(len(rows)):  # one matrix-vector product per row: faster than bmm's batched form on CPU
                exact[i].add_(torch.mv(gathered[i], h[i]))
            exact.nan_to_num_(nan=-torch.inf, posinf=torch.inf, neginf=-torch.inf).masked_fill_(short < 0, -torch.inf)
            values, order = torch.topk(exact, min(k_max, size), dim=1)
            top = torch.gather(safe, 1, order)
        return per_row_top(values.numpy(), top.numpy(), rows)
