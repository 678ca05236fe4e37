"""BERT4Rec: sequential recommendation with a bidirectional Transformer (Sun et al., CIKM 2019).

Training is the cloze task: in a window of a user's last `max_len` items, each item is replaced by a [MASK]
token with probability `mask_prob`, and the network, attending in both directions, predicts the masked items
with a softmax over all items (cross-entropy). Scoring appends a [MASK] after the user's last `max_len - 1`
items and reads the predicted distribution at that position, so a new user is scored from a raw history.

Layers: item embedding (tied with the output layer) plus learned position embedding, `n_blocks` pre-norm
Transformer blocks with GELU feed-forward layers of 4 * dim, and the paper's output head (dense, GELU,
LayerNorm, then dot product with the item embeddings plus a per-item bias).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genrec.data.interactions import Histories, Interactions
from genrec.models.base import register
from genrec.models.sasrec import SelfAttentionBlock, attention_mask
from genrec.models.sequence_base import SequenceRecommender
from genrec.training.sequences import (
    PAD,
    FeatureIndex,
    ItemEmbedding,
    SequenceWindows,
    history_tokens,
    mask_items,
)
from genrec.training.trainer import StepContext


# the network --------------------------------------------------------------------------------------------------
class BERT4RecNetwork(nn.Module):
    """Tokens: 0 padding, 1..n_items items, n_items + 1 [MASK]."""

    def __init__(self, n_items: int, max_len: int, dim: int, n_blocks: int, n_heads: int, dropout: float,
                 mask_prob: float, features: FeatureIndex | None = None):
        super().__init__()
        self.n_items, self.max_len, self.dropout, self.mask_prob = n_items, max_len, dropout, mask_prob
        self.mask_token = n_items + 1
        self.items = ItemEmbedding(n_items + 2, dim, features)
        self.positions = nn.Parameter(torch.randn(max_len, dim) * 0.02)
        self.blocks = nn.ModuleList(
            SelfAttentionBlock(dim, n_heads, dropout, 4 * dim, activation=F.gelu) for _ in range(n_blocks))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim))
        self.bias = nn.Parameter(torch.zeros(n_items))

    def encode(self, tokens: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """(B, T) left-padded tokens -> (B, T, dim); every position attends to every item of its window."""
        valid = (tokens != PAD).unsqueeze(-1)
        x = table[tokens] + self.positions[self.max_len - tokens.shape[1] :]
        x = F.dropout(x, self.dropout, self.training) * valid
        mask = attention_mask(tokens, causal=False)
        for block in self.blocks:
            x = block(x, mask) * valid
        return self.norm(x)

    def logits(self, hidden: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """(P, dim) hidden states -> (P, n_items)."""
        return self.head(hidden) @ table[1 : self.n_items + 1].T + self.bias

    def score(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, n_items): the prediction at the last position (the appended [MASK])."""
        table = self.items.table()
        return self.logits(self.encode(tokens, table)[:, -1], table)

    def training_step(self, tokens: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """Mean cross-entropy over the masked positions."""
        inputs, labels = mask_items(tokens, self.mask_prob, self.mask_token)
        table = self.items.table()
        hidden = self.encode(inputs, table)
        where = labels != PAD
        return F.cross_entropy(self.logits(hidden[where], table), labels[where] - 1)


# the recommender ----------------------------------------------------------------------------------------------
@register("bert4rec")
class BERT4Rec(SequenceRecommender):
    """BERT4Rec with 2 blocks, 2 heads and 64 dimensions (the paper's setting) and max_len 50 (its Beauty
    setting); `generate` samples continuations by repeatedly predicting the appended [MASK]."""

    def __init__(self, max_len: int = 50, dim: int = 64, n_blocks: int = 2, n_heads: int = 2, dropout: float = 0.1,
                 mask_prob: float = 0.2, item_features: list[str] | None = None, epochs: int = 200,
                 batch_size: int = 128, lr: float = 1e-3, seed: int = 0, train_options: dict | None = None):
        """mask_prob: share of items masked in training (the paper tunes 0.2-0.6 per data set); other arguments
        as SASRec's."""
        self.max_len = max_len
        self.dim = dim
        self.n_blocks = n_blocks
        self.n_heads = n_heads
        self.dropout = dropout
        self.mask_prob = mask_prob
        self.item_features = item_features
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed
        self.train_options = train_options

    def _check_hyperparameters(self) -> None:
        super()._check_hyperparameters()
        if not 0.0 < self.mask_prob <= 1.0:
            raise ValueError(f"mask_prob must be in (0, 1], got {self.mask_prob!r}")

    def _build_module(self) -> BERT4RecNetwork:
        return BERT4RecNetwork(self.n_items_, self.max_len, self.dim, self.n_blocks, self.n_heads, self.dropout,
                               self.mask_prob, self.item_features_)

    def _training_data(self, train: Interactions) -> SequenceWindows:
        return SequenceWindows(train.histories(), self.max_len, stride=self.max_len)

    def _score_input(self, histories: Histories) -> torch.Tensor:
        tokens = torch.from_numpy(history_tokens(histories, self.max_len - 1))
        return torch.cat([tokens, torch.full((len(tokens), 1), self.n_items_ + 1)], dim=1)
