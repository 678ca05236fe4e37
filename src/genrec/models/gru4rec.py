"""GRU4Rec: recurrent next-item prediction (Hidasi et al., ICLR 2016; Hidasi & Karatzoglou, CIKM 2018).

A GRU (or LSTM) reads a user's items in order; its hidden state after item t scores item t+1 as
h_t . W_j + b_j. As in the reference implementation's default ("constrained embedding"), the input embedding
of an item is its output vector W_j, and dropout applies to the embeddings and to the recurrent outputs.

Losses of the reference implementation, over the target and the negatives of each position:
- "ce": softmax cross-entropy. Negatives: the other targets at the same time step of the mini-batch (in-batch
  negatives, the paper's session-parallel mini-batches) plus `n_negatives` items sampled with probability
  proportional to popularity ** sample_alpha, optionally with logQ correction (`logq`); `n_negatives=None`
  uses the full softmax over all items instead.
- "bpr-max": scores pass through ELU(elu_param) (0.5, the reference's final activation); the loss is
  -log sum_j s_j sigmoid(r_target - r_j) + bpreg * sum_j s_j r_j^2, with s the softmax over the negatives only
  (score regularisation, Hidasi & Karatzoglou 2018).
Unlike the reference, samples equal to a row's target (accidental hits) are left out of that row.

Training differs from the reference in one respect: it runs over windows of `max_len + 1` items of each user's
history (every event is a target once) rather than session-parallel mini-batches that carry hidden states
across sessions, and uses the Trainer's Adam instead of Adagrad with momentum.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from genrec.data.interactions import Interactions
from genrec.models.base import register
from genrec.models.sequence_base import SequenceRecommender
from genrec.training.sequences import (
    PAD,
    FeatureIndex,
    ItemEmbedding,
    SequenceWindows,
    next_item_pairs,
)
from genrec.training.trainer import StepContext

LOSSES = ("ce", "bpr-max")
CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}


# the network --------------------------------------------------------------------------------------------------
class GRU4RecNetwork(nn.Module):
    def __init__(self, n_items: int, dim: int, n_layers: int, cell: str, dropout_embed: float,
                 dropout_hidden: float, loss: str, n_negatives: int | None, sample_alpha: float, logq: float,
                 bpreg: float, elu_param: float, item_counts: torch.Tensor, features: FeatureIndex | None = None):
        super().__init__()
        self.n_items, self.dropout_embed, self.dropout_hidden = n_items, dropout_embed, dropout_hidden
        self.loss_name, self.n_negatives, self.logq = loss, n_negatives, logq
        self.bpreg, self.elu_param = bpreg, elu_param
        self.items = ItemEmbedding(n_items + 1, dim, features)
        self.bias = nn.Parameter(torch.zeros(n_items))
        self.rnn = CELLS[cell](dim, dim, n_layers, batch_first=True, dropout=dropout_hidden if n_layers > 1 else 0)
        self.register_buffer("log_counts", item_counts.clamp_min(1.0).log(), persistent=False)
        self.register_buffer("sampling_weights", item_counts**sample_alpha, persistent=False)
        self.sample_alpha = sample_alpha

    def encode(self, tokens: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """(B, T) right-padded tokens -> (B, T, dim) recurrent outputs (zero after each sequence's end)."""
        lengths = (tokens != PAD).sum(1).clamp_min(1)
        x = F.dropout(table[tokens], self.dropout_embed, self.training)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = pad_packed_sequence(self.rnn(packed)[0], batch_first=True, total_length=tokens.shape[1])
        return F.dropout(out, self.dropout_hidden, self.training)

    def score(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, n_items): the state after the last item times every output vector, plus the item bias."""
        table = self.items.table()
        last = (tokens != PAD).sum(1).clamp_min(1) - 1
        h = self.encode(tokens, table)[torch.arange(len(tokens)), last]
        return h @ table[1:].T + self.bias

    def training_step(self, tokens: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """Mean loss over the positions that have a next item."""
        inputs, targets = next_item_pairs(tokens)
        table = self.items.table()
        hidden = self.encode(inputs, table)
        if self.n_negatives is not None:
            return self.in_batch_loss(hidden, targets, table)
        where = targets != PAD
        y = targets[where] - 1
        scores = hidden[where] @ table[1:].T + self.bias
        return self.loss(scores, y, torch.zeros_like(scores, dtype=torch.bool), log_q=None)

    def in_batch_loss(self, hidden: torch.Tensor, targets: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """At each time step, the windows with a target there are the rows; the candidates are every window's
        target at that step (row b's own in column b) followed by n_negatives samples drawn for the step."""
        b, t = targets.shape
        y = targets.T - 1  # (T, B) item indices, -1 where a window has no target
        samples = torch.zeros(t, 0, dtype=torch.long, device=y.device)
        if self.n_negatives:
            samples = torch.multinomial(self.sampling_weights, t * self.n_negatives, replacement=True).view(t, -1)
        candidates = torch.cat([y, samples], dim=1)  # (T, B + n)
        safe = candidates.clamp_min(0)
        scores = torch.bmm(hidden.transpose(0, 1), table[safe + 1].transpose(1, 2)) + self.bias[safe][:, None]
        log_q = torch.cat([self.log_counts[safe[:, :b]], self.sample_alpha * self.log_counts[safe[:, b:]]], 1)
        step, row = (y >= 0).nonzero(as_tuple=True)
        excluded = (candidates[step] == y[step, row][:, None]) | (candidates[step] < 0)
        return self.loss(scores[step, row], row, excluded, log_q[step])

    def loss(self, scores: torch.Tensor, target: torch.Tensor, excluded: torch.Tensor,
             log_q: torch.Tensor | None) -> torch.Tensor:
        """Mean over rows. scores (R, C); target (R,) each row's target column; excluded (R, C) columns that are
        no negatives for the row (padding, accidental hits); log_q (R, C) log sampling weights, or None."""
        rows = torch.arange(len(target), device=scores.device)
        own = torch.zeros_like(excluded)
        own[rows, target] = True
        if self.loss_name == "ce":
            if log_q is not None and self.logq:
                scores = scores - self.logq * log_q
            return F.cross_entropy(scores.masked_fill(excluded & ~own, float("-inf")), target)
        if self.elu_param > 0:
            scores = F.elu(scores, self.elu_param)
        weights = torch.softmax(scores.masked_fill(excluded | own, float("-inf")), dim=1).nan_to_num(0.0)
        positive = scores[rows, target][:, None]
        ranking = -torch.log((weights * torch.sigmoid(positive - scores)).sum(1) + 1e-24)
        return (ranking + self.bpreg * (weights * scores**2).sum(1)).mean()


# the recommender ----------------------------------------------------------------------------------------------
@register("gru4rec")
class GRU4Rec(SequenceRecommender):
    """GRU4Rec with the reference implementation's defaults (one layer of 100 units, cross-entropy, 2048
    popularity-sampled negatives with sample_alpha 0.5, bpreg 1.0, ELU 0.5 for BPR-max, 10 epochs)."""

    _pad_side = "right"

    def __init__(self, dim: int = 100, n_layers: int = 1, cell: str = "gru", loss: str = "ce",
                 n_negatives: int | None = 2048, sample_alpha: float = 0.5, logq: float = 0.0, bpreg: float = 1.0,
                 elu_param: float = 0.5, dropout_embed: float = 0.0, dropout_hidden: float = 0.0, max_len: int = 50,
                 item_features: list[str] | None = None, epochs: int = 10, batch_size: int = 64, lr: float = 1e-3,
                 seed: int = 0, train_options: dict | None = None):
        """dim: embedding and hidden size; cell: 'gru' | 'lstm'; loss: 'ce' | 'bpr-max'; n_negatives: extra
        sampled negatives per time step (None: full softmax over all items); sample_alpha: popularity exponent
        of the sampling; logq: weight of the logQ correction for 'ce'; bpreg: BPR-max score regularisation;
        elu_param: ELU alpha on the scores for BPR-max (0: none); max_len: items per training window and items
        of history read when scoring."""
        self.dim = dim
        self.n_layers = n_layers
        self.cell = cell
        self.loss = loss
        self.n_negatives = n_negatives
        self.sample_alpha = sample_alpha
        self.logq = logq
        self.bpreg = bpreg
        self.elu_param = elu_param
        self.dropout_embed = dropout_embed
        self.dropout_hidden = dropout_hidden
        self.max_len = max_len
        self.item_features = item_features
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed
        self.train_options = train_options

    def _check_hyperparameters(self) -> None:
        if self.max_len < 2:
            raise ValueError(f"max_len must be at least 2, got {self.max_len!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {self.cell!r}")
        for name in ("dropout_embed", "dropout_hidden"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if self.n_negatives is not None and self.n_negatives < 0:
            raise ValueError(f"n_negatives must be >= 0 or None (full softmax), got {self.n_negatives!r}")

    def _build_module(self) -> GRU4RecNetwork:
        return GRU4RecNetwork(self.n_items_, self.dim, self.n_layers, self.cell, self.dropout_embed,
                              self.dropout_hidden, self.loss, self.n_negatives, self.sample_alpha, self.logq,
                              self.bpreg, self.elu_param, self._sampling_counts(), self.item_features_)

    def _training_data(self, train: Interactions) -> SequenceWindows:
        return SequenceWindows(train.histories(), self.max_len + 1, stride=self.max_len, pad_side="right")
