"""The base class of the sequence recommenders (SASRec, BERT4Rec, GRU4Rec): a TorchRecommender that reads
time-ordered histories, embeds optional item attributes, validates on NDCG@10, scores from the last `max_len`
items and samples continuations of a history (`generate`). The token and window machinery it uses lives in
genrec.training.sequences.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from genrec.data.interactions import Histories, Interactions
from genrec.models.torch_base import TorchRecommender
from genrec.training.sequences import FeatureIndex, generate_continuations, history_tokens


class SequenceRecommender(TorchRecommender):
    """A TorchRecommender that reads ordered histories: item features, popularity for negative sampling,
    validation on NDCG@10 by default, scoring from the last `max_len` items, and `generate`."""

    needs_order = True
    _train_defaults = {"monitor": "ndcg@10"}
    _pad_side = "left"

    def fit(self, train: Interactions, validation=None) -> SequenceRecommender:
        """Train on `train`'s time-ordered sequences; with `validation` (a Holdout), keep the best epoch."""
        self._check_hyperparameters()
        self.item_features_ = None
        if self.item_features:
            self.item_features_ = FeatureIndex.build(train.item_attributes, list(self.item_features),
                                                     train.n_items, train.source)
        self._item_counts = np.bincount(train.items, minlength=train.n_items).astype(np.float64)
        self._train(train, validation)
        return self

    def _check_hyperparameters(self) -> None:
        if self.max_len < 2:
            raise ValueError(f"max_len must be at least 2, got {self.max_len!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")

    def _sampling_counts(self) -> torch.Tensor:
        """(n_items,) training events per item (ones after loading: only training samples negatives)."""
        counts = getattr(self, "_item_counts", None)
        return torch.ones(self.n_items_) if counts is None else torch.from_numpy(counts).float()

    def _score_input(self, histories: Histories) -> torch.Tensor:
        return torch.from_numpy(history_tokens(histories, self.max_len, self._pad_side))

    def _get_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays, meta = super()._get_state()
        meta["feature_vocab"] = None if self.item_features_ is None else self.item_features_.vocab
        return arrays, meta

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.item_features_ = None
        if meta.get("feature_vocab") is not None:
            self.item_features_ = FeatureIndex(meta["feature_vocab"], arrays["items.feature_offsets"],
                                               arrays["items.feature_values"], arrays["items.feature_weights"])
        super()._set_state(arrays, meta)

    def generate(self, histories: Histories, n_steps: int, temperature: float = 1.0, top_k: int | None = None,
                 seed: int = 0, exclude_seen: bool = True) -> list[np.ndarray]:
        """Sample `n_steps` items continuing each history; see `generate_continuations`."""
        return generate_continuations(self, histories, n_steps, temperature, top_k, seed, exclude_seen)
