"""Two-stage scoring of a Mult-VAE/DAE: a shortlist from a low-rank copy of the output layer, re-ranked exactly.

Nearly all of a request's cost is the output layer, W (n_items, d) and its bias: d * n_items multiply-adds per
user (600 x 40,981 = 24.6 M on Gowalla), and at small batches the time goes into reading W's 98 MB. The
truncated SVD W ≈ U_r diag(s_r) V_r^T gives approximate logits for r * (d + n_items) multiply-adds (rank 64:
2.7 M, 10.5 MB of weights). So, per batch of requests:

1. the network up to the output layer, as the model scores: h (B, d), the output layer's input (in numpy: at
   one to a few users these layers are a dozen tiny operations, and numpy's per-call cost is a fifth of torch's);
2. approximate logits h W_r^T + bias, with W_r = W V_r V_r^T the best rank-r approximation of W (V_r: the top r
   eigenvectors of W^T W, W's right singular vectors), computed as (h V_r) (W V_r)^T in int8 (see
   `approximate`); the row's history (exclude_seen) and the items outside its candidate mask get -inf; its
   `candidates` best items are the shortlist;
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
from genrec.serving.served import ScoringRow, ServedModel


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
        self.rank, self.candidates, self.n_items = rank, candidates, n_items
        weight, bias = layer.weight.detach(), layer.bias.detach()  # (n_items, d), (n_items,)
        self._weight, self._bias = weight.numpy(), bias.numpy()  # views: the memory is the model's
        # the layers before the output layer as numpy (W^T, b) pairs; of the encoder's last layer of a VAE only
        # the mean's half (the posterior mean is what is scored): the input layer itself when it is the only one
        input_weight, input_bias = net.input_layer.weight.detach(), net.input_layer.bias.detach()
        encoder = [(m.weight.detach(), m.bias.detach()) for m in net.encoder]
        if net.variational and encoder:
            w, b = encoder[-1]
            encoder[-1] = (w[: net.latent], b[: net.latent])
        elif net.variational:
            input_weight, input_bias = input_weight[:, : net.latent], input_bias[: net.latent]
        self._input_weight = input_weight.contiguous().numpy()  # (n_items, d0): one row per item
        self._input_bias = input_bias.contiguous().numpy()
        self._encoder = [(w.T.contiguous().numpy(), b.numpy()) for w, b in encoder]
        self._decoder = [(m.weight.detach().T.contiguous().numpy(), m.bias.detach().numpy())
                         for m in net.decoder[:-1]]
        self._variational = net.variational
        # W V_r V_r^T is the truncated SVD U_r diag(s_r) V_r^T, with V_r the top eigenvectors of W^T W (d, d)
        _, vectors = torch.linalg.eigh((weight.T @ weight).double())
        top = vectors[:, -rank:].flip(1).float()  # (d, rank), largest singular value first
        self.project = top.contiguous()  # (d, rank)
        self.expand_int8 = _int8_linear((weight @ top).contiguous(), bias)  # rank -> n_items

    def approximate(self, h: torch.Tensor) -> torch.Tensor:
        """(B, n_items) low-rank logits (h V_r) (W V_r)^T + bias, by fbgemm's int8 kernel: its 2.6 MB of weights
        (rank 64 on Gowalla) against 10.5 MB in float32, 1.2x faster than MKL's float32 product for one row and
        4-9x for two to four (MKL handles a few rows against 41k columns badly); the shortlist tolerates the ~1%
        error (agreement on Gowalla: benchmarks/results/serving.md)."""
        return self.expand_int8(h @ self.project)

    def close(self) -> None:
        """Nothing to release (the scorer lives in the server's process); here for the app's model swaps."""

    def hidden(self, rows: list[ScoringRow]) -> np.ndarray:
        """(B, d) float32: the output layer's input for each row's history (binary, each item once), the
        posterior mean: `MultVAENetwork.encode` and `decode` up to the last layer, restated in numpy for speed
        (tests/serving/test_scorer_rerank.py checks the result against the model's own scores)."""
        h = np.zeros((len(rows), len(self._input_bias)), np.float32)
        for i, row in enumerate(rows):
            if not len(row.items):
                continue
            items = np.unique(row.items)
            if items[0] < 0 or items[-1] >= self.n_items:
                raise ValueError(f"item index out of range 0..{self.n_items - 1} in a history")
            np.sum(self._input_weight[items], axis=0, out=h[i])
            h[i] *= np.float32(1.0 / np.sqrt(len(items)))  # the L2-normalised binary row
        h += self._input_bias
        for w, b in self._encoder:
            h = np.tanh(h) @ w + b
        if not self._variational:
            h = np.tanh(h)
        for i, (w, b) in enumerate(self._decoder):
            h = (h if i == 0 else np.tanh(h)) @ w + b
        return np.tanh(h) if self._decoder else h

    def shortlist(self, h: torch.Tensor, rows: list[ScoringRow], size: int) -> torch.Tensor:
        """(B, size) int64: each row's best items by the low-rank logits, among those it may get."""
        approx = self.approximate(h)
        seen = [i * self.n_items + r.items for i, r in enumerate(rows) if r.exclude_seen and len(r.items)]
        if seen:
            approx.view(-1).index_fill_(0, torch.from_numpy(np.concatenate(seen).astype(np.int64)), -torch.inf)
        for i, row in enumerate(rows):
            if row.allowed is not None:
                approx[i].masked_fill_(torch.from_numpy(~row.allowed), -torch.inf)
        values, items = torch.topk(approx, size, dim=1, sorted=False)  # (the order is set after re-scoring)
        return items.masked_fill_(values == -torch.inf, -1)  # -1: fewer than `size` items are allowed

    def score_rows(self, rows: list[ScoringRow]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(items, scores) per row, best first, as `ServedModel.score_rows`: exact float32 scores, history
        items dropped when exclude_seen, only allowed items, at most k."""
        k_max = min(max(r.k for r in rows), self.n_items)
        size = min(max(self.candidates, k_max), self.n_items)
        h = self.hidden(rows)
        with torch.no_grad():
            short = self.shortlist(torch.from_numpy(h), rows, size).numpy()
        out = []
        for i, row in enumerate(rows):  # exact logits of the row's shortlist: (size, d) @ (d,), then its top k
            items = short[i][short[i] >= 0]
            exact = self._weight[items] @ h[i] + self._bias[items]
            exact[np.isnan(exact)] = -np.inf
            k = min(row.k, len(items))
            top = np.argpartition(-exact, k - 1)[:k] if 0 < k < len(items) else np.arange(len(items))
            top = top[np.lexsort((items[top], -exact[top]))][:k]  # best first; ties by item index
            keep = np.isfinite(exact[top])
            out.append((items[top][keep].astype(np.int64), exact[top][keep]))
        return out
