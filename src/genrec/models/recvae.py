"""RecVAE (Shenbin et al. 2020, "RecVAE: a New Variational Autoencoder for Top-N Recommendations with Implicit
Feedback", WSDM), following the authors' current code (github.com/ilya-shenbin/RecVAE).

Mult-VAE with four changes:
- the encoder is a dense stack of 5 layers of `hidden_dim` units: h_k = LayerNorm(swish(W_k h_{k-1} + h_1 + ...
  + h_{k-1})), LayerNorm eps 0.1, on the L2-normalised, dropped-out (p=0.5) input; the decoder is one linear
  layer from the latent code to item logits;
- the prior is composite: per latent dimension a mixture of N(0, 1), the posterior of the encoder as it was
  before this epoch's decoder pass (the "old encoder"), and a wide N(0, e^10), with weights 3/20, 3/4, 1/10;
- the KL weight of each user is gamma * |history| (or a constant beta when given);
- encoder and decoder are updated in alternation: each epoch makes n_enc_epochs passes updating the encoder
  (input dropout on), then copies the encoder into the prior, then n_dec_epochs passes updating the decoder
  (no dropout). The Trainer runs these as phases with one Adam per group.

The first layer is sparse (`SparseLinear`, shared with Mult-VAE) and the likelihood is gathered at the
history's items, so no dense user-item input is ever built. A new user's history is scored with no retraining.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from genrec.data.interactions import Interactions
from genrec.models.base import register
from genrec.models.multvae import SparseLinear, multinomial_nll, normalized_input
from genrec.models.torch_base import TorchRecommender
from genrec.training.data import SparseRows
from genrec.training.trainer import StepContext

LOG_2PI = math.log(2 * math.pi)


def log_normal(z: torch.Tensor, mu: torch.Tensor | float, logvar: torch.Tensor | float) -> torch.Tensor:
    """Elementwise log N(z; mu, exp(logvar))."""
    logvar = torch.as_tensor(logvar, dtype=z.dtype, device=z.device)
    return -0.5 * (logvar + LOG_2PI + (z - mu) ** 2 * torch.exp(-logvar))


def composite_prior_log_density(z: torch.Tensor, old_mu: torch.Tensor, old_logvar: torch.Tensor,
                                weights: tuple[float, float, float] = (3 / 20, 3 / 4, 1 / 10),
                                wide_logvar: float = 10.0) -> torch.Tensor:
    """(B, latent) log p(z) per dimension under w0 N(0, 1) + w1 N(old_mu, exp(old_logvar)) + w2 N(0, e^10)."""
    components = torch.stack([
        log_normal(z, 0.0, 0.0) + math.log(weights[0]),
        log_normal(z, old_mu, old_logvar) + math.log(weights[1]),
        log_normal(z, 0.0, wide_logvar) + math.log(weights[2]),
    ], dim=-1)
    return torch.logsumexp(components, dim=-1)


class RecVAEEncoder(nn.Module):
    """Sparse input -> n_layers dense-residual layers (swish, LayerNorm) -> (mu, logvar)."""

    def __init__(self, n_items: int, hidden_dim: int, latent_dim: int, n_layers: int = 5, eps: float = 0.1):
        super().__init__()
        self.input_layer = SparseLinear(n_items, hidden_dim)
        bound = 1.0 / math.sqrt(n_items)  # torch's default Linear init, as the official nn.Linear first layer
        nn.init.uniform_(self.input_layer.weight, -bound, bound)
        nn.init.uniform_(self.input_layer.bias, -bound, bound)
        self.layers = nn.ModuleList(nn.Linear(hidden_dim, hidden_dim) for _ in range(n_layers - 1))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden_dim, eps=eps) for _ in range(n_layers))
        self.mu = nn.Linear(hidden_dim, latent_dim)
        self.logvar = nn.Linear(hidden_dim, latent_dim)

    def forward(self, batch: SparseRows, dropout: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar), each (B, latent_dim)."""
        h = self.norms[0](F.silu(self.input_layer(batch, normalized_input(batch, dropout, self.training))))
        earlier = h
        for layer, norm in zip(self.layers, self.norms[1:]):
            h = norm(F.silu(layer(h) + earlier))
            earlier = earlier + h
        return self.mu(h), self.logvar(h)


class RecVAENetwork(nn.Module):
    def __init__(self, n_items: int, hidden_dim: int, latent_dim: int, dropout: float, gamma: float,
                 beta: float | None, mixture_weights: tuple[float, float, float], n_enc_epochs: int,
                 n_dec_epochs: int):
        super().__init__()
        self.encoder = RecVAEEncoder(n_items, hidden_dim, latent_dim)
        self.old_encoder = RecVAEEncoder(n_items, hidden_dim, latent_dim).requires_grad_(False)
        self.old_encoder.load_state_dict(self.encoder.state_dict())
        self.decoder = nn.Linear(latent_dim, n_items)
        self.dropout, self.gamma, self.beta = dropout, gamma, beta
        self.mixture_weights = mixture_weights
        self.n_enc_epochs, self.n_dec_epochs = n_enc_epochs, n_dec_epochs

    # alternating updates (the Trainer's phases) ---------------------------------------------------------------
    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"encoder": list(self.encoder.parameters()), "decoder": list(self.decoder.parameters())}

    def phases(self, epoch: int) -> list[str]:
        return ([f"encoder-{i + 1}" for i in range(self.n_enc_epochs)]
                + [f"decoder-{i + 1}" for i in range(self.n_dec_epochs)])

    def start_phase(self, phase: str, epoch: int) -> None:
        if phase == "decoder-1":  # the prior's posterior follows the encoder after its passes of this epoch
            self.old_encoder.load_state_dict(self.encoder.state_dict())

    # loss -----------------------------------------------------------------------------------------------------
    def kl_weight(self, batch: SparseRows) -> torch.Tensor:
        """(B,) gamma * |history| per user, or beta for everyone."""
        if self.beta is not None:
            return torch.full((batch.batch_size,), self.beta, device=batch.values.device)
        clicks = torch.zeros(batch.batch_size, device=batch.values.device).index_add_(0, batch.rows, batch.values)
        return self.gamma * clicks

    def encoder_loss(self, batch: SparseRows) -> torch.Tensor:
        """Mean over users of -log p(x|z) + kl_weight * (log q(z|x) - log p(z)), one sample of z; the decoder
        is held fixed (its weights are detached: no gradient work for a group not being updated)."""
        mu, logvar = self.encoder(batch, self.dropout)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        logits = F.linear(z, self.decoder.weight.detach(), self.decoder.bias.detach())
        with torch.no_grad():
            old_mu, old_logvar = self.old_encoder(batch, 0.0)
        log_prior = composite_prior_log_density(z, old_mu, old_logvar, self.mixture_weights)
        kl = (log_normal(z, mu, logvar) - log_prior).sum(dim=1)
        return (multinomial_nll(logits, batch) + self.kl_weight(batch) * kl).mean()

    def decoder_loss(self, batch: SparseRows) -> torch.Tensor:
        """Mean -log p(x|z) with z drawn from the fixed encoder without input dropout (the KL term has no
        decoder gradient, so it is left out)."""
        with torch.no_grad():
            mu, logvar = self.encoder(batch, 0.0)
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return multinomial_nll(self.decoder(z), batch).mean()

    def training_step(self, batch: SparseRows, ctx: StepContext) -> list[tuple[str, torch.Tensor]]:
        if ctx.phase.startswith("encoder"):
            return [("encoder", self.encoder_loss(batch))]
        return [("decoder", self.decoder_loss(batch))]

    def score(self, batch: SparseRows) -> torch.Tensor:
        """(B, n_items) logits at the posterior mean."""
        return self.decoder(self.encoder(batch, 0.0)[0])


@register("recvae")
class RecVAE(TorchRecommender):
    _train_defaults = {"monitor": "ndcg@100", "fused": True}  # as Liang et al., models are selected on NDCG@100

    def __init__(self, hidden_dim: int = 600, latent_dim: int = 200, dropout: float = 0.5, gamma: float = 0.005,
                 beta: float | None = None, mixture_weights: tuple[float, float, float] = (3 / 20, 3 / 4, 1 / 10),
                 n_enc_epochs: int = 3, n_dec_epochs: int = 1, epochs: int = 50, batch_size: int = 500,
                 lr: float = 5e-4, seed: int = 0, train_options: dict | None = None):
        """gamma: KL weight per history item (beta: a constant KL weight instead); mixture_weights: standard,
        old-posterior and wide components of the prior; each epoch is n_enc_epochs encoder passes then
        n_dec_epochs decoder passes; train_options: how to train (checkpoint_dir, patience, monitor, ...)."""
        self.hidden_dim = hidden_dim
        self.latent_dim = latent_dim
        self.dropout = dropout
        self.gamma = gamma
        self.beta = beta
        self.mixture_weights = mixture_weights
        self.n_enc_epochs = n_enc_epochs
        self.n_dec_epochs = n_dec_epochs
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed
        self.train_options = train_options

    def fit(self, train: Interactions, validation=None) -> RecVAE:
        """Train on `train`'s clicks (binarised); with `validation`, keep the epoch with the best monitor metric
        (default ndcg@100, as the official code)."""
        if len(self.mixture_weights) != 3 or abs(sum(self.mixture_weights) - 1.0) > 1e-6:
            raise ValueError(f"mixture_weights must be three weights summing to 1, got {self.mixture_weights!r}")
        if self.n_enc_epochs < 1 or self.n_dec_epochs < 1:
            raise ValueError("n_enc_epochs and n_dec_epochs must be at least 1")
        self._train(train, validation)
        return self

    def _build_module(self) -> RecVAENetwork:
        return RecVAENetwork(self.n_items_, self.hidden_dim, self.latent_dim, self.dropout, self.gamma, self.beta,
                             tuple(self.mixture_weights), self.n_enc_epochs, self.n_dec_epochs)

