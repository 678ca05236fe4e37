"""Mult-VAE and Mult-DAE: autoencoders with a multinomial likelihood over items (Liang et al. 2018,
"Variational Autoencoders for Collaborative Filtering", WWW).

A user's clicks x (binary, n_items) are L2-normalised, dropped out (p=0.5) and encoded; the decoder turns the
code into logits over all items, and the loss is the multinomial log-likelihood of the clicks,
sum_i x_i log softmax(logits)_i. Mult-VAE encodes to a Gaussian posterior (mu, logvar) and adds beta * KL
to N(0, I), with beta rising by 1/total_anneal_steps per update until anneal_cap (Liang's schedule); Mult-DAE
encodes deterministically and puts an L2 penalty on the weights. Scores are the decoder's logits at the
posterior mean, so a new user's history is scored with no retraining (fold-in).

The first layer is sparse: `embedding_bag` (mode sum) over the history's items, weighted by the normalised
values, so neither the user-item matrix nor a batch of it is ever dense; the likelihood gathers the logits at
the history's items and subtracts logsumexp (no dense target matrix either).
"""

from __future__ import annotations

from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from genrec.data.interactions import Interactions
from genrec.models.base import register
from genrec.models.torch_base import TorchRecommender
from genrec.training.data import SparseRows
from genrec.training.trainer import StepContext, linear_anneal


# layers and likelihood (RecVAE builds on these too) ----------------------------------------------------------
def normalized_input(batch: SparseRows, dropout: float, training: bool) -> torch.Tensor:
    """(nnz,) values of the L2-normalised rows, with dropout on the nonzeros (a dense dropout on the
    normalised input drops exactly these entries; zeros stay zero)."""
    squares = torch.zeros(batch.batch_size, device=batch.values.device).index_add_(0, batch.rows, batch.values**2)
    values = batch.values * torch.rsqrt(squares.clamp_min(1e-12))[batch.rows]
    return F.dropout(values, dropout, training)


class SparseLinear(nn.Module):
    """x @ weight + bias for sparse rows x (B, in_features): weight is (in_features, out_features), one row per
    item, and the product is `embedding_bag(mode='sum')` weighted by x's values: O(nnz * out) work."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, batch: SparseRows, values: torch.Tensor) -> torch.Tensor:
        """(B, out_features) float32."""
        return F.embedding_bag(batch.indices, self.weight, batch.offsets, mode="sum", per_sample_weights=values,
                               include_last_offset=True) + self.bias


class MultinomialNLL(torch.autograd.Function):
    """(B,) -sum_i x_i log softmax(logits)_i for logits (B, n_items) and sparse x, gathering the logits at x's
    nonzeros only. The forward keeps exp(logits - rowmax) and the backward scales it into the gradient,
    (sum_i x_i) softmax(logits) - x per row: one pass over the largest tensor of a training step where autograd
    of the plain expression makes six (a second dense gradient for the gather, added to the softmax's)."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, rows: torch.Tensor, indices: torch.Tensor, values: torch.Tensor,
                batch_size: int) -> torch.Tensor:
        dtype = torch.promote_types(logits.dtype, values.dtype)  # sums in float32 at least (bf16 logits on GPU)
        rowmax = logits.detach().amax(dim=1, keepdim=True)
        exp = torch.sub(logits.detach(), rowmax).exp_()
        partition = exp.sum(dim=1, dtype=dtype)
        lse = rowmax.squeeze(1).to(dtype) + partition.log()
        picked = torch.zeros(batch_size, device=logits.device, dtype=dtype).index_add_(
            0, rows, logits.detach()[rows, indices].to(dtype) * values)
        clicks = torch.zeros(batch_size, device=logits.device, dtype=dtype).index_add_(0, rows, values.to(dtype))
        ctx.save_for_backward(exp, partition, rows, indices, values, clicks)
        return clicks * lse - picked

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        exp, partition, rows, indices, values, clicks = ctx.saved_tensors
        out = exp * (grad * clicks / partition)[:, None].to(exp.dtype)  # the softmax, scaled
        out.index_put_((rows, indices), (-grad[rows] * values).to(out.dtype), accumulate=True)
        return out, None, None, None, None


def multinomial_nll(logits: torch.Tensor, batch: SparseRows) -> torch.Tensor:
    """(B,) -sum_i x_i log softmax(logits)_i, gathering logits (B, n_items) at the nonzeros of x only."""
    return MultinomialNLL.apply(logits, batch.rows, batch.indices, batch.values, batch.batch_size)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """(B,) KL(N(mu, exp(logvar)) || N(0, I)), summed over latent dimensions."""
    return 0.5 * (logvar.exp() + mu**2 - 1.0 - logvar).sum(dim=1)


# the network ----------------------------------------------------------------------------------------------
class MultVAENetwork(nn.Module):
    """[n_items -> hidden_dims... -> latent -> ...reversed hidden -> n_items], tanh between layers.

    variational: the encoder's last layer gives (mu, logvar) of size latent each; otherwise (DAE) it gives the
    code itself, followed by tanh as in Liang's code.
    """

    def __init__(self, n_items: int, hidden_dims: tuple[int, ...], dropout: float, variational: bool,
                 anneal_cap: float = 0.0, total_anneal_steps: int = 0, weight_decay: float = 0.0,
                 batch_size: int = 1):
        super().__init__()
        *hidden, latent = hidden_dims
        encoder_dims = [*hidden, 2 * latent if variational else latent]
        self.input_layer = SparseLinear(n_items, encoder_dims[0])
        self.encoder = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(encoder_dims))
        self.decoder = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise([latent, *reversed(hidden), n_items]))
        self.dropout, self.variational, self.latent = dropout, variational, latent
        self.anneal_cap, self.total_anneal_steps = anneal_cap, total_anneal_steps
        self.weight_decay, self.batch_size = weight_decay, batch_size
        for weight in self.weights():  # Xavier weights, N(0, 0.001) biases, as Liang's code
            nn.init.xavier_uniform_(weight)
        for layer in [self.input_layer, *self.encoder, *self.decoder]:
            nn.init.normal_(layer.bias, std=0.001)

    def weights(self) -> list[torch.Tensor]:
        return [self.input_layer.weight, *(layer.weight for layer in [*self.encoder, *self.decoder])]

    def encode(self, batch: SparseRows) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mu, logvar), each (B, latent); logvar is None for the DAE."""
        h = self.input_layer(batch, normalized_input(batch, self.dropout, self.training))
        for layer in self.encoder:
            h = layer(torch.tanh(h))
        if not self.variational:
            return torch.tanh(h), None
        return h[:, : self.latent], h[:, self.latent :]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent) -> (B, n_items) logits."""
        for i, layer in enumerate(self.decoder):
            z = layer(z if i == 0 else torch.tanh(z))
        return z

    def score(self, batch: SparseRows) -> torch.Tensor:
        return self.decode(self.encode(batch)[0])

    def beta(self, step: int) -> float:
        """KL weight at update `step`: min(anneal_cap, step / total_anneal_steps), Liang's schedule."""
        return min(self.anneal_cap, linear_anneal(step, self.total_anneal_steps, 1.0))

    def loss(self, batch: SparseRows, step: int) -> torch.Tensor:
        """Mean over the batch of -log p(x|z) + beta * KL (VAE), plus weight_decay / batch_size * sum ||W||^2
        (Liang's lam / batch_size on a batch-mean loss, i.e. lam per user)."""
        mu, logvar = self.encode(batch)
        z = mu
        if self.variational and self.training:
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        loss = multinomial_nll(self.decode(z), batch).mean()
        if self.variational:
            loss = loss + self.beta(step) * gaussian_kl(mu, logvar).mean()
        if self.weight_decay:
            loss = loss + self.weight_decay / self.batch_size * sum(w.pow(2).sum() for w in self.weights())
        return loss

    def training_step(self, batch: SparseRows, ctx: StepContext) -> torch.Tensor:
        return self.loss(batch, ctx.step)


# the recommenders -----------------------------------------------------------------------------------------
class _MultAutoencoder(TorchRecommender):
    """What Mult-VAE and Mult-DAE share: binary inputs, the Trainer, model selection on NDCG@100."""

    _variational = True
    # Liang et al. select models on NDCG@100. Fused Adam: one pass per parameter. keep_freed_memory: every step
    # re-allocates ~100 MB tensors (logits, their gradient, the two big weight gradients) whose fresh pages cost
    # as much as the GEMMs on them (a training step on Gowalla, 500 users x 41k items: 3.0 s -> 2.0 s).
    _train_defaults = {"monitor": "ndcg@100", "fused": True, "keep_freed_memory": True}

    def fit(self, train: Interactions, validation=None) -> _MultAutoencoder:
        """Train on `train`'s clicks (values are binarised); with `validation`, keep the epoch with the best
        monitor metric (default ndcg@100, as Liang et al.)."""
        if not self.hidden_dims or any(d < 1 for d in self.hidden_dims):
            raise ValueError(f"hidden_dims must be positive layer sizes, got {self.hidden_dims!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        self._train(train, validation)
        return self

    def _build_module(self) -> MultVAENetwork:
        return MultVAENetwork(self.n_items_, tuple(self.hidden_dims), self.dropout, self._variational,
                              getattr(self, "anneal_cap", 0.0), getattr(self, "total_anneal_steps", 0),
                              self.weight_decay, self.batch_size)


@register("multvae")
class MultVAE(_MultAutoencoder):
    """Mult-VAE^PR (Liang et al. 2018): [n_items -> 600 -> 200 -> 600 -> n_items], beta annealed to 0.2."""

    _variational = True

    def __init__(self, hidden_dims: tuple[int, ...] = (600, 200), dropout: float = 0.5, anneal_cap: float = 0.2,
                 total_anneal_steps: int = 200_000, epochs: int = 200, batch_size: int = 500, lr: float = 1e-3,
                 weight_decay: float = 0.0, seed: int = 0, train_options: dict | None = None):
        """hidden_dims: encoder sizes after the input, the last is the latent size; dropout: on the input;
        beta = min(anneal_cap, updates / total_anneal_steps); weight_decay: Liang's lam (L2 on weights, per
        user); train_options: how to train (checkpoint_dir, patience, monitor, device, ...; see TrainOptions)."""
        self.hidden_dims = hidden_dims
        self.dropout = dropout
        self.anneal_cap = anneal_cap
        self.total_anneal_steps = total_anneal_steps
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.seed = seed
        self.train_options = train_options


@register("multdae")
class MultDAE(_MultAutoencoder):
    """Mult-DAE (Liang et al. 2018): [n_items -> 200 -> n_items] with tanh, input dropout 0.5, L2 lam 0.01."""

    _variational = False

    def __init__(self, hidden_dims: tuple[int, ...] = (200,), dropout: float = 0.5, epochs: int = 200,
                 batch_size: int = 500, lr: float = 1e-3, weight_decay: float = 0.01, seed: int = 0,
                 train_options: dict | None = None):
        """As MultVAE, without the KL term; the paper's architecture is [I -> 200 -> I]."""
        self.hidden_dims = hidden_dims
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.seed = seed
        self.train_options = train_options
