"""SASRec: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018).

A user's last `max_len` items (left-padded, most recent last) are embedded (item embedding * sqrt(dim) plus a
learned position embedding) and passed through `n_blocks` causal Transformer blocks (pre-norm: multi-head
self-attention, then a two-layer ReLU feed-forward network, each with dropout and a residual connection), so the
hidden state at position t sees items 1..t only. It predicts item t+1 by a dot product with the item embeddings,
which are tied to the input embeddings. Scores for a history are the last position's hidden state times every
item embedding: a new user is scored from their raw history with no retraining.

Losses, at every position of every training window:
- "ce": cross-entropy of a softmax over all items (the strong modern setting, e.g. Klenitskiy & Vasilev 2023;
  on CPU computed chunk by chunk without the full logits, see `linear_cross_entropy`);
- "sampled": softmax over the target and `n_negatives` sampled items, uniformly or by popularity, with the logQ
  correction (subtract log of each candidate's sampling probability; Yi et al. 2019) for large catalogues;
- "bce": the paper's binary cross-entropy with one uniformly sampled negative per position.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from genrec.data.interactions import Interactions
from genrec.models.base import register
from genrec.models.sequence_base import SequenceRecommender
from genrec.training.sequences import (
    PAD,
    FeatureIndex,
    ItemEmbedding,
    SequenceWindows,
    linear_cross_entropy,
    next_item_pairs,
)
from genrec.training.trainer import StepContext

LOSSES = ("ce", "sampled", "bce")
INITS = ("scaled", "xavier")
SAMPLINGS = ("uniform", "popularity")


# the network --------------------------------------------------------------------------------------------------
def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """F.dropout; on CPU it draws 16-bit thresholds, four per 64-bit random number (torch's CPU generator makes
    one number at a time, which made dropout 5-10% of a Beauty training step), so p is kept to 1/65536."""
    if not training or p == 0.0 or x.device.type != "cpu":
        return F.dropout(x, p, training)
    n = x.numel()
    bits = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64).view(torch.int16)[:n]
    keep = (bits.view(x.shape) >= round(p * 65536) - 32768).to(x.dtype).mul_(1.0 / (1.0 - p))  # no autograd
    return x * keep


class SelfAttentionBlock(nn.Module):
    """Pre-norm Transformer block: x + attention(LN(x)), then x + FFN(LN(x)); dropout on attention weights and on
    each sub-layer's output. mask: (B, 1, T, T) bool, True where a query may attend to a key."""

    def __init__(self, dim: int, n_heads: int, dropout: float, ffn_dim: int, activation=F.relu):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"dim={dim} must be a multiple of n_heads={n_heads}")
        self.n_heads, self.dropout, self.activation = n_heads, dropout, activation
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.ffn1, self.ffn2 = nn.Linear(dim, ffn_dim), nn.Linear(ffn_dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        x = x + dropout(self.out(a.transpose(1, 2).reshape(b, t, d)), p, self.training)
        h = dropout(self.activation(self.ffn1(self.norm2(x))), p, self.training)
        return x + dropout(self.ffn2(h), p, self.training)


def attention_mask(tokens: torch.Tensor, causal: bool) -> torch.Tensor:
    """(B, 1, T, T) bool: keys that are items (and, if causal, not later than the query); every position may
    attend to itself, so padding rows stay finite."""
    t = tokens.shape[1]
    allowed = (tokens != PAD)[:, None, None, :]
    if causal:
        allowed = allowed & torch.ones(t, t, dtype=torch.bool, device=tokens.device).tril()
    return allowed | torch.eye(t, dtype=torch.bool, device=tokens.device)


class SASRecNetwork(nn.Module):
    def __init__(self, n_items: int, max_len: int, dim: int, n_blocks: int, n_heads: int, dropout: float,
                 loss: str, n_negatives: int, sampling: str, item_counts: torch.Tensor,
                 features: FeatureIndex | None = None, embedding_init: str = "scaled"):
        """embedding_init: 'scaled', item embeddings N(0, 1/dim) and positions N(0, 0.02^2); 'xavier', both
        Xavier-normal, N(0, 2 / (rows + dim)), as the reference implementations (Kang's TensorFlow code, pmixer's
        PyTorch port): item inputs ~10x smaller than 'scaled' and positions of the same order as items."""
        super().__init__()
        self.n_items, self.max_len, self.dim = n_items, max_len, dim
        self.loss_name, self.n_negatives, self.dropout = loss, n_negatives, dropout
        xavier = embedding_init == "xavier"
        self.items = ItemEmbedding(n_items + 1, dim, features,
                                   std=math.sqrt(2.0 / (n_items + 1 + dim)) if xavier else None)
        position_std = math.sqrt(2.0 / (max_len + dim)) if xavier else 0.02
        self.positions = nn.Parameter(torch.randn(max_len, dim) * position_std)
        self.blocks = nn.ModuleList(SelfAttentionBlock(dim, n_heads, dropout, dim) for _ in range(n_blocks))
        self.norm = nn.LayerNorm(dim)
        q = item_counts + 1.0 if sampling == "popularity" else torch.ones(n_items)
        self.register_buffer("sampling_probs", q / q.sum(), persistent=False)

    def encode(self, tokens: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """(B, T) left-padded tokens -> (B, T, dim) hidden states; padding positions are zero."""
        valid = (tokens != PAD).unsqueeze(-1).to(table.dtype)
        x = table[tokens] * math.sqrt(self.dim) + self.positions[self.max_len - tokens.shape[1] :]
        x = dropout(x, self.dropout, self.training) * valid
        mask = attention_mask(tokens, causal=True)
        for block in self.blocks:
            x = block(x, mask) * valid
        return self.norm(x)

    def score(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, n_items): the last position's hidden state times every item embedding."""
        table = self.items.table()
        return self.encode(tokens, table)[:, -1] @ table[1:].T

    def training_step(self, tokens: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """Mean loss over the positions that have a next item. Under CPU autocast (TrainOptions.amp_cpu) only
        the full-softmax loss takes bfloat16: its products are large, while the encoder's are small enough that
        the casts cost more than they save (Beauty: a 7.3 s epoch with the encoder autocast too)."""
        if tokens.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                return self._step(tokens, low_precision=True)
        return self._step(tokens, low_precision=False)

    def _step(self, tokens: torch.Tensor, low_precision: bool) -> torch.Tensor:
        inputs, targets = next_item_pairs(tokens)
        table = self.items.table()
        hidden = self.encode(inputs, table)
        where = targets != PAD
        h, y = hidden[where], targets[where] - 1  # (P, dim), (P,) item indices
        if self.loss_name == "ce":  # on CPU chunked, never holding the (P, n_items) logits; the same value
            if h.device.type == "cpu":
                return linear_cross_entropy(h, table[1:], y, low_precision=low_precision)
            return F.cross_entropy(h @ table[1:].T, y)
        if self.loss_name == "sampled":
            return self.sampled_softmax(h, y, table)
        negatives = torch.randint(self.n_items, y.shape, device=y.device)
        positive = (h * table[y + 1]).sum(-1)
        negative = (h * table[negatives + 1]).sum(-1)
        return F.softplus(-positive).mean() + F.softplus(negative).mean()

    def sampled_softmax(self, h: torch.Tensor, y: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """Softmax over [target, n_negatives shared samples] with logits - log q(item); a sample equal to the
        row's target (an accidental hit) is left out of that row."""
        negatives = torch.multinomial(self.sampling_probs, self.n_negatives, replacement=True)
        log_q = self.sampling_probs.log()
        positive = (h * table[y + 1]).sum(-1, keepdim=True) - log_q[y, None]
        negative = h @ table[negatives + 1].T - log_q[negatives]
        negative = negative.masked_fill(negatives[None, :] == y[:, None], float("-inf"))
        logits = torch.cat([positive, negative], dim=1)
        return F.cross_entropy(logits, torch.zeros_like(y))


# the recommender ----------------------------------------------------------------------------------------------
@register("sasrec")
class SASRec(SequenceRecommender):
    """SASRec with the paper's architecture (2 blocks, 1 head, 64 dimensions, max_len 50) and full-softmax
    cross-entropy by default; `generate` samples continuations of a history."""

    def __init__(self, max_len: int = 50, dim: int = 64, n_blocks: int = 2, n_heads: int = 1, dropout: float = 0.2,
                 loss: str = "ce", n_negatives: int = 256, sampling: str = "uniform",
                 item_features: list[str] | None = None, embedding_init: str = "scaled", epochs: int = 200,
                 batch_size: int = 128, lr: float = 1e-3, seed: int = 0, train_options: dict | None = None):
        """max_len: items of history read; dim: embedding and hidden size; dropout: on embeddings, attention and
        feed-forward outputs (0.2 in the paper for dense data, 0.5 for sparse; tune on validation);
        loss: 'ce' | 'sampled' | 'bce'; n_negatives and sampling ('uniform' | 'popularity'): for 'sampled';
        item_features: item attribute columns (categories, `|`-joined tags) embedded into the item embedding;
        embedding_init: 'scaled' | 'xavier' (see SASRecNetwork); train_options: how to train (monitor, patience,
        eval_every, ...; see TrainOptions)."""
        self.max_len = max_len
        self.dim = dim
        self.n_blocks = n_blocks
        self.n_heads = n_heads
        self.dropout = dropout
        self.loss = loss
        self.n_negatives = n_negatives
        self.sampling = sampling
        self.item_features = item_features
        self.embedding_init = embedding_init
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed
        self.train_options = train_options

    def _check_hyperparameters(self) -> None:
        super()._check_hyperparameters()
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {self.sampling!r}")
        if self.embedding_init not in INITS:
            raise ValueError(f"embedding_init must be one of {', '.join(INITS)}, got {self.embedding_init!r}")
        if self.loss == "sampled" and self.n_negatives < 1:
            raise ValueError(f"n_negatives must be positive for loss='sampled', got {self.n_negatives!r}")

    def _build_module(self) -> SASRecNetwork:
        return SASRecNetwork(self.n_items_, self.max_len, self.dim, self.n_blocks, self.n_heads, self.dropout,
                             self.loss, self.n_negatives, self.sampling, self._sampling_counts(), self.item_features_,
                             self.embedding_init)

    def _training_data(self, train: Interactions) -> SequenceWindows:
        return SequenceWindows(train.histories(), self.max_len + 1, stride=self.max_len)
