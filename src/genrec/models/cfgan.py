"""CFGAN (Chae, Kang, Kim and Lee 2018, "CFGAN: A Generic Collaborative Filtering Framework based on Generative
Adversarial Networks", CIKM), user-based, following the authors' released code (no random noise z).

The generator G maps a user's purchase vector c_u (binary, n_items; optionally with one-hot user attributes
a_u) to a real-valued preference vector r_hat_u in (0, 1)^n_items: sigmoid MLP, sigmoid output. The
discriminator D(r | c_u, a_u) is a sigmoid MLP giving the logit that r is a real purchase vector. Real
vectors are the purchases themselves, r_u = e_u; fake vectors are r_hat_u masked to the items D may look at.

Two schemes keep G from the trivial answer "every item is 1":
- partial masking (PM): each epoch, a share s_pm of each user's non-purchased items N_u^PM joins the mask, so
  D sees r_hat_u * (e_u + k_u) and G must push those items towards 0 to look real;
- zero reconstruction (ZR): another share s_zr of non-purchased items N_u^ZR is drawn, and G pays
  alpha * sum_{j in N_u^ZR} r_hat_uj^2 (their true value is 0).
On a large catalogue `max_negatives` caps both draws (s = 0.7 of Gowalla's 41k items is ~28k a user).

Losses (means over the batch, BCE on logits):
    D: -log D(e_u | c_u) - log(1 - D(r_hat_u * (e_u + k_u) | c_u)) + d_l2 * ||theta_D||^2 / 2
    G:  -log D(r_hat_u * (e_u + k_u) | c_u) + alpha * ZR + g_l2 * ||theta_G||^2 / 2
Each epoch is d_steps passes updating D, then g_steps passes updating G (the Trainer's phases, one Adam per
player). Both negative sets are drawn once per (epoch, user) from a hash of (seed, epoch, user, ...), so D's
and G's passes of an epoch see the same sets whatever the batching, and a resumed run replays them.

Sparse all the way in training: the condition c_u and D's input vector (zero outside e_u + k_u) enter
through embedding bags, and G's output is computed only where a loss reads it (e_u, k_u and N_u^ZR; a
sampled matrix product when those are a small part of the catalogue). The losses are the dense ones above.
Scores are G(c_u), dense: a new user's history is scored with no retraining (fold-in).

Deviations from the authors' ML-100K setting (their code: itemBased, G 400, D 125, 1 hidden layer each,
reg_G 1e-3, Adam 1e-4, S_ZR = S_PM = 70% of non-purchased items, alpha 0.03, step_G 4, step_D 2, 750-1000
G passes): we are user-based (item-based CFGAN cannot fold in a new user), and D and G share one batch size
(theirs: 64 and 32). The epoch count is chosen by early stopping on validation users.
"""

from __future__ import annotations

import warnings
from itertools import pairwise
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from genrec.data.interactions import Histories, Interactions
from genrec.models.base import register
from genrec.models.multvae import SparseLinear
from genrec.models.torch_base import TorchRecommender
from genrec.training.data import SparseRows, sparse_rows
from genrec.training.negatives import NegativeSampler, entries, stable_argsort
from genrec.training.trainer import StepContext

PM_STREAM, ZR_STREAM = 1, 2  # NegativeSampler streams: the two sets are drawn independently


# the networks -------------------------------------------------------------------------------------------------
class CFGANBatch(NamedTuple):
    """A batch of users: their purchases as sparse rows and their one-hot attributes (B, n_features)."""

    rows: SparseRows
    features: torch.Tensor


def _csr(offsets: torch.Tensor, columns: torch.Tensor, values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    with warnings.catch_warnings():  # torch warns once that sparse CSR support is "in beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(offsets, columns, values, size, check_invariants=False)


class SampledLinear(torch.autograd.Function):
    """(nnz,) h @ weight.T + bias at the (row, item) entries of a CSR pattern only: a sampled dense-dense product
    forward, two sparse-dense products backward; O(nnz * hidden) work instead of O(B * n_items * hidden)."""

    @staticmethod
    def forward(ctx, h, weight, bias, offsets, items, rows):
        pattern = _csr(offsets, items, torch.zeros(len(items), dtype=h.dtype, device=h.device),
                       (h.shape[0], weight.shape[0]))
        ctx.save_for_backward(h, weight, offsets, items, rows)
        return torch.sparse.sampled_addmm(pattern, h, weight.t(), beta=0.0).values() + bias[items]

    @staticmethod
    def backward(ctx, grad):
        h, weight, offsets, items, rows = ctx.saved_tensors
        grad, n = grad.contiguous().to(weight.dtype), weight.shape[0]
        d_h = d_weight = d_bias = None
        if ctx.needs_input_grad[0]:
            d_h = _csr(offsets, items, grad, (h.shape[0], n)) @ weight
        if ctx.needs_input_grad[1]:  # the transposed pattern: entries grouped by item
            order = stable_argsort(items)
            by_item = torch.zeros(n + 1, dtype=torch.int64, device=items.device)
            by_item[1:] = torch.bincount(items, minlength=n).cumsum(0)
            d_weight = _csr(by_item, rows[order], grad[order], (n, h.shape[0])) @ h
        if ctx.needs_input_grad[2]:
            d_bias = torch.zeros(n, dtype=grad.dtype, device=grad.device).index_add_(0, items, grad)
        return d_h, d_weight, d_bias, None, None, None


class ConditionedMLP(nn.Module):
    """Sigmoid MLP on [sparse vector r (optional), sparse condition c_u, attributes a_u] -> out_features.
    The first layer's three blocks of weights are applied separately, as embedding bags for r and c_u."""

    def __init__(self, n_items: int, n_features: int, hidden_dims: tuple[int, ...], out_features: int,
                 takes_vector: bool):
        super().__init__()
        first = hidden_dims[0]
        self.condition = SparseLinear(n_items, first)
        self.vector = nn.EmbeddingBag(n_items, first, mode="sum", include_last_offset=True,  # (n_items, first)
                                      _weight=torch.empty(n_items, first)) if takes_vector else None
        self.features = nn.Linear(n_features, first, bias=False) if n_features else None
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(hidden_dims))
        self.output = nn.Linear(hidden_dims[-1], out_features)
        for weight in self.weights():  # Xavier weights and zero biases, as the authors' TensorFlow layers
            nn.init.xavier_uniform_(weight)
        for bias in [self.condition.bias, *(layer.bias for layer in [*self.hidden, self.output])]:
            nn.init.zeros_(bias)

    def weights(self) -> list[torch.Tensor]:
        extra = [m.weight for m in (self.vector, self.features) if m is not None]
        return [self.condition.weight, *extra, *(layer.weight for layer in [*self.hidden, self.output])]

    def last_hidden(self, batch: CFGANBatch, vector: SparseRows | None = None) -> torch.Tensor:
        """(B, hidden_dims[-1]) the last hidden layer's activations."""
        h = self.condition(batch.rows, batch.rows.values)
        if self.vector is not None:
            h = h + self.vector(vector.indices, vector.offsets, per_sample_weights=vector.values)
        if self.features is not None:
            h = h + self.features(batch.features)
        for layer in self.hidden:
            h = layer(torch.sigmoid(h))
        return torch.sigmoid(h)

    def forward(self, batch: CFGANBatch, vector: SparseRows | None = None) -> torch.Tensor:
        return self.output(self.last_hidden(batch, vector))

    def output_at(self, h: torch.Tensor, at: SparseRows) -> torch.Tensor:
        """(nnz,) output logits at `at`'s (row, item) entries only."""
        if 4 * len(at.indices) >= h.shape[0] * self.output.out_features:  # most of the catalogue: one product
            return self.output(h)[at.rows, at.indices]
        return SampledLinear.apply(h, self.output.weight, self.output.bias, at.offsets, at.indices, at.rows)


class CFGANNetwork(nn.Module):
    def __init__(self, n_items: int, n_features: int, hidden_dims_g: tuple[int, ...],
                 hidden_dims_d: tuple[int, ...], s_pm: float, s_zr: float, alpha: float, g_l2: float,
                 d_l2: float, d_steps: int, g_steps: int, seed: int, max_negatives: int | None = None):
        super().__init__()
        self.generator = ConditionedMLP(n_items, n_features, hidden_dims_g, n_items, takes_vector=False)
        self.discriminator = ConditionedMLP(n_items, n_features, hidden_dims_d, 1, takes_vector=True)
        self.n_items, self.alpha = n_items, alpha
        self.g_l2, self.d_l2, self.d_steps, self.g_steps = g_l2, d_l2, d_steps, g_steps
        self.pm_negatives = NegativeSampler(n_items, s_pm, seed, PM_STREAM, max_negatives)
        self.zr_negatives = NegativeSampler(n_items, s_zr, seed, ZR_STREAM, max_negatives)
        self.d_counts: dict[int, list[float]] = {}  # epoch -> [real judged real, fake judged fake, users]

    # the two players, one Adam each, D's passes before G's ------------------------------------------------------
    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"discriminator": list(self.discriminator.parameters()),
                "generator": list(self.generator.parameters())}

    def phases(self, epoch: int) -> list[str]:
        return ([f"discriminator-{i + 1}" for i in range(self.d_steps)]
                + [f"generator-{i + 1}" for i in range(self.g_steps)])

    # loss -----------------------------------------------------------------------------------------------------
    def generate(self, batch: CFGANBatch) -> torch.Tensor:
        """(B, n_items) r_hat_u in (0, 1)."""
        return torch.sigmoid(self.generator(batch))

    def fake(self, batch: CFGANBatch, epoch: int, zero_reconstruction: bool = False
             ) -> tuple[SparseRows, torch.Tensor | None]:
        """D's view of the fake vector, r_hat_u * (e_u + k_u) as sparse rows, and (if asked) r_hat_u at N_u^ZR
        (nnz,); G's output is computed once at the union of those entries."""
        rows, n = batch.rows, self.n_items
        parts = [rows, self.pm_negatives(rows, epoch)]
        if zero_reconstruction:
            parts.append(self.zr_negatives(rows, epoch))
        keys = [p.rows * n + p.indices for p in parts]
        union, inverse = _unique(torch.cat(keys))
        at = entries(union // n, union % n, torch.ones(len(union), device=union.device), rows.users, n)
        r_hat = torch.sigmoid(self.generator.output_at(self.generator.last_hidden(batch), at))
        positions = inverse.split([len(k) for k in keys])
        view = entries(torch.cat([parts[0].rows, parts[1].rows]), torch.cat([parts[0].indices, parts[1].indices]),
                       r_hat[torch.cat(positions[:2])], rows.users, n)
        return view, (r_hat[positions[2]] if zero_reconstruction else None)

    def discriminator_loss(self, batch: CFGANBatch, epoch: int) -> torch.Tensor:
        real = batch.rows._replace(values=batch.rows.values.clamp(max=1.0))
        with torch.no_grad():
            fake, _ = self.fake(batch, epoch)
        d_real = self.discriminator(batch, real).squeeze(1)
        d_fake = self.discriminator(batch, fake).squeeze(1)
        counts = self.d_counts.setdefault(epoch, [0.0, 0.0, 0.0])
        counts[0] += float((d_real > 0).sum())
        counts[1] += float((d_fake < 0).sum())
        counts[2] += len(d_real)
        loss = (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
        return loss + self.d_l2 * _half_squared_norm(self.discriminator) if self.d_l2 else loss

    def generator_loss(self, batch: CFGANBatch, epoch: int) -> torch.Tensor:
        fake, zero_targets = self.fake(batch, epoch, zero_reconstruction=bool(self.alpha))
        self.discriminator.requires_grad_(False)  # D is only differentiated through, not updated, here
        d_fake = self.discriminator(batch, fake).squeeze(1)
        self.discriminator.requires_grad_(True)
        loss = F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))
        if self.alpha:  # sum over each user's N_u^ZR of r_hat^2, mean over the batch
            loss = loss + self.alpha * zero_targets.pow(2).sum() / batch.rows.batch_size
        return loss + self.g_l2 * _half_squared_norm(self.generator) if self.g_l2 else loss
    def training_step(self, batch: CFGANBatch, ctx: StepContext) -> list[tuple[str, torch.Tensor]]:
        if ctx.phase.startswith("discriminator"):
            return [("discriminator", self.discriminator_loss(batch, ctx.epoch))]
        return [("generator", self.generator_loss(batch, ctx.epoch))]

    def epoch_metrics(self, epoch: int) -> dict[str, float]:
        """D's accuracy on real and on fake vectors over the epoch's D passes (the Trainer logs it per epoch)."""
        real, fake, n = self.d_counts.pop(epoch, (0.0, 0.0, 0.0))
        return {"d_accuracy_real": real / n, "d_accuracy_fake": fake / n} if n else {}

    def score(self, batch: CFGANBatch) -> torch.Tensor:
        return self.generate(batch)


def _unique(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sorted distinct keys, each key's position among them), as torch.unique(return_inverse=True)."""
    order = stable_argsort(keys)
    ordered = keys[order]
    new = torch.ones_like(ordered, dtype=torch.bool)
    new[1:] = ordered[1:] != ordered[:-1]
    inverse = torch.empty_like(order)
    inverse[order] = torch.cumsum(new, 0) - 1
    return ordered[new], inverse


class HalfSquaredNorm(torch.autograd.Function):
    """sum of w^2 / 2 over the given tensors (TensorFlow's l2_loss): one read of each forward and one scaled
    copy backward, where autograd of w.pow(2).sum() makes several passes over G's two 41k x 400 tables."""

    @staticmethod
    def forward(ctx, *weights):
        ctx.save_for_backward(*weights)
        return torch.stack([torch.linalg.vector_norm(w).square() for w in weights]).sum() / 2

    @staticmethod
    def backward(ctx, grad):
        return tuple(w * grad for w in ctx.saved_tensors)


def _half_squared_norm(module: nn.Module) -> torch.Tensor:
    """sum of w^2 / 2 over every parameter (TensorFlow's l2_loss, as the authors' reg_G and reg_D)."""
    return HalfSquaredNorm.apply(*module.parameters())


# the training data: users' rows and their attributes -------------------------------------------------------
class UserRows:
    """Users with at least one purchase, served as `CFGANBatch`es (rows straight from CSR)."""

    def __init__(self, matrix, features: np.ndarray):
        self.matrix = matrix.tocsr().astype(np.float32)
        self.features = features
        self.users = np.flatnonzero(np.diff(self.matrix.indptr) > 0)

    def __len__(self) -> int:
        return len(self.users)

    def batch(self, indices: np.ndarray) -> CFGANBatch:
        users = self.users[np.sort(indices)]
        return CFGANBatch(sparse_rows(self.matrix[users], users), torch.from_numpy(self.features[users]))


def one_hot_attributes(frame: pd.DataFrame, columns: list[str],
                       vocabulary: list[str] | None = None) -> tuple[list[str], np.ndarray]:
    """(vocabulary, (n_rows, len(vocabulary)) float32): one column per `column=value` (values as text; a
    missing value sets no column). Without `vocabulary`, it is the sorted set of pairs seen in `frame`."""
    for col in columns:
        if col not in frame.columns:
            raise ValueError(f"user_features: no user attribute {col!r} (attributes: {', '.join(frame.columns)})")
    labels = {col: (col + "=" + frame[col].astype("string")).to_numpy(dtype=object) for col in columns}
    if vocabulary is None:
        vocabulary = sorted({v for values in labels.values() for v in values if isinstance(v, str)})
    index = pd.Index(vocabulary)
    out = np.zeros((len(frame), len(vocabulary)), np.float32)
    for values in labels.values():  # one vectorised lookup per attribute column
        codes = index.get_indexer(np.where(pd.isna(values), "", values).astype(object))
        rows = np.flatnonzero(codes >= 0)
        out[rows, codes[rows]] = 1.0
    return list(vocabulary), out


# the recommender --------------------------------------------------------------------------------------------
@register("cfgan")
class CFGAN(TorchRecommender):
    """CFGAN with both schemes (the paper's CFGAN_ZP), user-based; defaults are the authors' ML-100K values."""

    _train_defaults = {"monitor": "ndcg@20"}

    def __init__(self, hidden_dims_g: tuple[int, ...] = (400,), hidden_dims_d: tuple[int, ...] = (125,),
                 s_pm: float = 0.7, s_zr: float = 0.7, alpha: float = 0.03, g_l2: float = 1e-3, d_l2: float = 0.0,
                 d_steps: int = 2, g_steps: int = 4, epochs: int = 250, batch_size: int = 32, lr: float = 1e-4,
                 user_features: list[str] | None = None, max_negatives: int | None = None, seed: int = 0,
                 train_options: dict | None = None):
        """hidden_dims_g / hidden_dims_d: hidden layer sizes of G and D (sigmoid); s_pm, s_zr: shares of each
        user's non-purchased items drawn per epoch for partial masking and zero reconstruction (0 turns a
        scheme off); alpha: ZR weight; g_l2, d_l2: L2 on each player's parameters (sum w^2 / 2); each epoch
        is d_steps passes updating D, then g_steps updating G (250 epochs = the authors' 1000 G passes);
        user_features: user attribute columns one-hot encoded into both players' condition (None: none);
        max_negatives: at most this many PM and this many ZR negatives per user and epoch (None: the shares
        alone; for large catalogues, where the shares give tens of thousands a user);
        train_options: how to train (patience, monitor, checkpoint_dir, device, ...; see TrainOptions)."""
        self.hidden_dims_g = hidden_dims_g
        self.hidden_dims_d = hidden_dims_d
        self.s_pm = s_pm
        self.s_zr = s_zr
        self.alpha = alpha
        self.g_l2 = g_l2
        self.d_l2 = d_l2
        self.d_steps = d_steps
        self.g_steps = g_steps
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.user_features = user_features
        self.max_negatives = max_negatives
        self.seed = seed
        self.train_options = train_options

    def fit(self, train: Interactions, validation=None) -> CFGAN:
        """Train both players on `train`'s purchases (values binarised); with `validation`, keep the epoch with
        the best monitor metric (default ndcg@20). The run history holds loss_discriminator, loss_generator and
        D's accuracy on real and on fake vectors (d_accuracy_real, d_accuracy_fake) per epoch."""
        self._check_params()
        self.feature_names_: list[str] = []
        self.known_user_features_ = np.zeros((0, 0), np.float32)
        self.known_user_ids_ = np.zeros(0, np.int64)
        if self.user_features:
            if train.user_attributes is None:
                raise ValueError(f"user_features={self.user_features!r}, but {train.source} has no user attributes")
            self.feature_names_, self.known_user_features_ = one_hot_attributes(train.user_attributes,
                                                                                list(self.user_features))
            self.known_user_ids_ = np.asarray(train.user_ids.raw)
        self._train(train, validation)
        return self

    def _check_params(self) -> None:
        for name in ("hidden_dims_g", "hidden_dims_d"):
            dims = getattr(self, name)
            if not dims or any(d < 1 for d in dims):
                raise ValueError(f"{name} must be positive layer sizes, got {dims!r}")
        for name in ("s_pm", "s_zr"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} is a share of non-purchased items in [0, 1], got {getattr(self, name)!r}")
        if self.max_negatives is not None and self.max_negatives < 1:
            raise ValueError(f"max_negatives must be at least 1 (or None), got {self.max_negatives!r}")
        if self.d_steps < 1 or self.g_steps < 1:
            raise ValueError(f"d_steps and g_steps must be at least 1, got {self.d_steps} and {self.g_steps}")

    def add_user_attributes(self, attributes: pd.DataFrame) -> CFGAN:
        """Make the attributes of more users (a frame indexed by raw user id, e.g. new users) available to
        `score`; users without known attributes are scored with an all-zero attribute vector."""
        self._check_fitted()
        if not self.feature_names_:
            return self
        _, rows = one_hot_attributes(attributes, list(self.user_features), self.feature_names_)
        ids = np.asarray(attributes.index)
        keep = ~pd.Index(self.known_user_ids_).isin(ids)
        self.known_user_ids_ = np.concatenate([np.asarray(self.known_user_ids_)[keep], ids])
        self.known_user_features_ = np.concatenate([self.known_user_features_[keep], rows])
        return self

    def user_feature_rows(self, histories: Histories) -> np.ndarray:
        """(n_users, n_features) float32 attributes of `histories`' users by raw id (zeros when unknown)."""
        out = np.zeros((histories.n_users, len(self.feature_names_)), np.float32)
        if self.feature_names_ and histories.user_ids is not None:
            pos = pd.Index(self.known_user_ids_).get_indexer(np.asarray(histories.user_ids))
            out[pos >= 0] = self.known_user_features_[pos[pos >= 0]]
        return out

    # TorchRecommender hooks ------------------------------------------------------------------------------------
    def _build_module(self) -> CFGANNetwork:
        return CFGANNetwork(self.n_items_, len(self.feature_names_), tuple(self.hidden_dims_g),
                            tuple(self.hidden_dims_d), self.s_pm, self.s_zr, self.alpha, self.g_l2, self.d_l2,
                            self.d_steps, self.g_steps, self.seed, self.max_negatives)

    def _training_data(self, train: Interactions) -> UserRows:
        return UserRows(train.csr(binary=True), self.user_feature_rows(train.histories()))

    def _score_input(self, histories: Histories) -> CFGANBatch:
        return CFGANBatch(sparse_rows(histories.binary()), torch.from_numpy(self.user_feature_rows(histories)))

    def _get_state(self):
        arrays, meta = super()._get_state()
        meta["feature_names_"] = self.feature_names_
        if self.feature_names_:
            arrays["known_user_features"] = self.known_user_features_
            meta["known_user_ids_"] = np.asarray(self.known_user_ids_).tolist()
        return arrays, meta

    def _set_state(self, arrays, meta) -> None:
        arrays = dict(arrays)
        self.feature_names_ = list(meta.get("feature_names_", []))
        self.known_user_features_ = np.asarray(arrays.pop("known_user_features", np.zeros((0, 0), np.float32)))
        self.known_user_ids_ = np.asarray(meta.get("known_user_ids_", []))
        vector, n_items = arrays.get("discriminator.vector.weight"), arrays["generator.condition.weight"].shape[0]
        if vector is not None and vector.shape[1] == n_items != vector.shape[0]:  # saved before D's input was sparse
            arrays["discriminator.vector.weight"] = np.ascontiguousarray(np.asarray(vector).T)
        super()._set_state(arrays, meta)
