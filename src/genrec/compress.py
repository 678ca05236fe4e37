"""Smaller and faster Mult-VAE / Mult-DAE for serving: ONNX export, int8 weights, and a low-rank decoder.

- `export_onnx(model, path)`: the scoring path as an ONNX graph on dense input: binary histories (B, n_items)
  float32 in, logits (B, n_items) out (L2 normalisation, encoder to the posterior mean, decoder). Run it with
  `OnnxRecommender(path)`, a `Recommender` over onnxruntime, so `recommend` and `evaluate` work unchanged.
- `quantize_onnx(src, dst)`: onnxruntime's dynamic quantisation: int8 weights for every MatMul (both large
  item matrices), activations quantised on the fly.
- `quantize_int8(model)`: the same idea in torch, keeping the sparse input: the item-input layer becomes an
  8-bit row-wise embedding bag (one scale and offset per item) and the `nn.Linear` layers dynamic int8
  (`torch.ao.quantization.quantize_dynamic`).
- `low_rank_decoder(model, rank)`: the output layer (d -> n_items) replaced by its truncated SVD, two layers
  d -> rank -> n_items; `choose_rank` picks the smallest rank within a tolerance of the full model's NDCG on
  validation users.

All of these return new objects; the fitted model is never modified. Sizes: `weight_bytes` (torch) and the file
size (ONNX).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from genrec.data.interactions import Histories
from genrec.data.splits import Holdout
from genrec.models.base import Recommender
from genrec.models.multvae import MultVAENetwork, SparseLinear
from genrec.training.data import SparseRows


def _network(model: Recommender) -> MultVAENetwork:
    module = getattr(model, "module_", None)
    if not isinstance(module, MultVAENetwork):
        raise TypeError(f"{type(model).__name__} is not a fitted Mult-VAE or Mult-DAE (no MultVAENetwork to compress)")
    return module


# ONNX ---------------------------------------------------------------------------------------------------------
class DenseAutoencoder(nn.Module):
    """The scoring path of a MultVAENetwork on dense input, sharing its weights: x (B, n_items) binary float32
    -> x / ||x|| -> encoder -> posterior mean (VAE) or tanh code (DAE) -> decoder -> logits (B, n_items)."""

    def __init__(self, net: MultVAENetwork):
        super().__init__()
        self.input_weight = net.input_layer.weight  # (n_items, hidden)
        self.input_bias = net.input_layer.bias
        self.encoder, self.decoder = net.encoder, net.decoder
        self.variational, self.latent = net.variational, net.latent

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * torch.rsqrt((x * x).sum(dim=1, keepdim=True).clamp_min(1e-12))
        h = x @ self.input_weight + self.input_bias
        for layer in self.encoder:
            h = layer(torch.tanh(h))
        z = h[:, : self.latent] if self.variational else torch.tanh(h)
        for i, layer in enumerate(self.decoder):
            z = layer(z if i == 0 else torch.tanh(z))
        return z


def export_onnx(model: Recommender, path: str | Path, opset: int = 17) -> Path:
    """Write `model`'s scoring graph to `path` (input `histories` (B, n_items), output `scores`); B is dynamic."""
    net = _network(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dense = DenseAutoencoder(net).eval()
    example = torch.zeros(2, model.n_items_)
    example[:, 0] = 1.0
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation
        torch.onnx.export(dense, (example,), str(path), dynamo=False, opset_version=opset,
                          input_names=["histories"], output_names=["scores"],
                          dynamic_axes={"histories": {0: "users"}, "scores": {0: "users"}})
    return path


def quantize_onnx(src: str | Path, dst: str | Path, per_channel: bool = False) -> Path:
    """int8 weights for every MatMul of the graph at `src` (onnxruntime dynamic quantisation), written to `dst`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=per_channel,
                     op_types_to_quantize=["MatMul"])
    return dst


class OnnxRecommender(Recommender):
    """Scores from an ONNX graph written by `export_onnx` (or `quantize_onnx`), run by onnxruntime on the CPU
    with `threads` intra-op threads (default: torch's thread count). It serves; it cannot be fitted or saved
    as a bundle (the .onnx file is its persistent form)."""

    name = "onnx"

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime as ort

        self.path = path
        self.threads = threads
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.session_ = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.n_items_ = int(self.session_.get_inputs()[0].shape[1])

    def fit(self, train, validation=None):
        raise TypeError("an OnnxRecommender serves an exported model; fit the torch model, then export_onnx")

    def score(self, histories: Histories) -> np.ndarray:
        """(n_users, n_items) float32 logits; the histories' values are binarised as the torch model does."""
        self._check_fitted(histories)
        dense = histories.binary().toarray().astype(np.float32, copy=False)
        return self.session_.run(["scores"], {"histories": dense})[0]


# int8 in torch ------------------------------------------------------------------------------------------------
class Int8SparseLinear(nn.Module):
    """A SparseLinear with 8-bit weights: each item row keeps its own scale and offset (fbgemm's row-wise
    embedding bag), so the product stays O(nnz * out) and the (n_items, out) matrix takes ~1/4 of the bytes."""

    def __init__(self, layer: SparseLinear):
        super().__init__()
        weight = layer.weight.detach().float().contiguous()
        self.register_buffer("packed_weight", torch.ops.quantized.embedding_bag_byte_prepack(weight))
        self.bias = nn.Parameter(layer.bias.detach().clone(), requires_grad=False)

    def forward(self, batch: SparseRows, values: torch.Tensor) -> torch.Tensor:
        """(B, out_features) float32."""
        return torch.ops.quantized.embedding_bag_byte_rowwise_offsets(
            self.packed_weight, batch.indices, batch.offsets, False, 0, False, values, None, True) + self.bias


def quantize_int8(model: Recommender) -> Recommender:
    """A copy of a fitted Mult-VAE/DAE with int8 weights: row-wise 8-bit item-input layer, dynamic int8
    `nn.Linear` layers (weights int8 per tensor, activations quantised per batch). CPU only."""
    from torch.ao.quantization import quantize_dynamic

    _network(model)
    out = copy.deepcopy(model)
    net = out.module_.to("cpu").eval()
    net.input_layer = Int8SparseLinear(net.input_layer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao
        out.module_ = quantize_dynamic(net, {nn.Linear}, dtype=torch.qint8)
    return out


def weight_bytes(model: Recommender) -> int:
    """Bytes of the network's weights as stored (int8 tensors count one byte per entry)."""
    total = 0
    for value in _network(model).state_dict().values():
        for t in value if isinstance(value, tuple) else (value,):
            if torch.is_tensor(t):
                total += t.numel() * t.element_size()
    return total


# low-rank decoder -----------------------------------------------------------------------------------------------
def low_rank_decoder(model: Recommender, rank: int) -> Recommender:
    """A copy whose output layer W (n_items, d) is replaced by its best rank-`rank` approximation (truncated
    SVD, W ≈ U_r diag(s_r) V_r^T), as d -> rank (no bias) -> n_items (the original bias)."""
    _network(model)
    out = copy.deepcopy(model)
    net = out.module_.to("cpu")
    layer = net.decoder[-1]
    if isinstance(layer, nn.Sequential):
        raise ValueError("the decoder is low-rank already")
    n_items, d = layer.weight.shape
    if not 1 <= rank < min(n_items, d):
        raise ValueError(f"rank must be in 1..{min(n_items, d) - 1} for a {d} -> {n_items} layer, got {rank}")
    u, s, vh = torch.linalg.svd(layer.weight.detach().double(), full_matrices=False)
    first, second = nn.Linear(d, rank, bias=False), nn.Linear(rank, n_items)
    with torch.no_grad():
        first.weight.copy_((s[:rank, None] * vh[:rank]).float())
        second.weight.copy_(u[:, :rank].float())
        second.bias.copy_(layer.bias.detach())
    net.decoder[-1] = nn.Sequential(first, second)
    net.eval()
    return out


def choose_rank(model: Recommender, validation: Holdout, ranks: tuple[int, ...] = (16, 32, 64, 128, 256),
                tolerance: float = 0.01, k: int = 20) -> tuple[int, list[dict]]:
    """The smallest rank whose validation NDCG@k is within `tolerance` (relative) of the full model's, else the
    best rank tried; with one row per candidate (`rank`, `ndcg@k`, `relative`, `weight_bytes`)."""
    from genrec.evaluation.evaluate import evaluate

    key = f"ndcg@{k}"
    full = evaluate(model, validation, ks=(k,), metrics=("ndcg",))[key]
    rows = []
    d = _network(model).decoder[-1].weight.shape[1]
    for rank in sorted(r for r in ranks if r < d):
        candidate = low_rank_decoder(model, rank)
        value = evaluate(candidate, validation, ks=(k,), metrics=("ndcg",))[key]
        rows.append({"rank": rank, key: value, "relative": value / full - 1 if full else 0.0,
                     "weight_bytes": weight_bytes(candidate)})
    if not rows:
        raise ValueError(f"no candidate rank below the layer's width {d}: {ranks}")
    good = [r for r in rows if r[key] >= (1 - tolerance) * full]
    best = good[0] if good else max(rows, key=lambda r: r[key])
    return best["rank"], rows
