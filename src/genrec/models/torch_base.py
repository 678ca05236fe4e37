"""What every torch recommender shares: building its network, training it with the Trainer, scoring batches
of users without gradients, and turning its weights into safetensors arrays.

A subclass implements:
- `_build_module(self) -> nn.Module`: the network, from hyperparameters and learned sizes (`self.n_items_`);
  the module implements `training_step(batch, ctx)` and `score(batch) -> (B, n_items)`;
- `_training_data(self, train) -> dataset` with `__len__` and `batch(indices)` (default: the binary CSR rows);
- `_score_input(self, histories) -> batch`: what `module.score` takes for a batch of users (default: the binary
  histories as SparseRows);
- `_train_defaults`: the Trainer options it starts from (e.g. its validation metric); `train_options` override them.
It calls `self._train(train, validation)` from `fit`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from genrec.data.interactions import Histories, Interactions
from genrec.models.base import Recommender
from genrec.training.data import CSRRows, sparse_rows
from genrec.training.trainer import Trainer, _to_device, resolve_device


class TorchRecommender(Recommender):
    #: learned sizes and settings saved in model.json next to the weights (names of attributes)
    _meta_attributes: tuple[str, ...] = ()
    #: Trainer options this model starts from; the user's `train_options` override them
    _train_defaults: dict[str, Any] = {}

    # subclass hooks -------------------------------------------------------------------------------------------
    def _build_module(self) -> torch.nn.Module:
        raise NotImplementedError

    def _training_data(self, train: Interactions):
        return CSRRows(train.csr(binary=True))

    def _score_input(self, histories: Histories):
        return sparse_rows(histories.binary())

    # training ---------------------------------------------------------------------------------------------
    def _trainer(self) -> Trainer:
        options = {**self._train_defaults, **(self.train_options or {})}
        return Trainer(self.epochs, self.batch_size, self.lr, seed=self.seed, options=options)

    def _train(self, train: Interactions, validation=None, history_path: str | Path | None = None) -> None:
        """Build the module and fit it; validation (a Holdout) drives early stopping on the monitor metric."""
        self.fit_dataset(self._training_data(train), train.n_items, validation, train, history_path)

    def fit_dataset(self, data, n_items: int, validation=None, train: Interactions | None = None,
                    history_path: str | Path | None = None) -> TorchRecommender:
        """Build the module for `n_items` items and train it on a dataset with `__len__` and `batch(indices)`
        (in-memory rows, or user shards streamed from disk); validation (a Holdout) drives model selection."""
        torch.manual_seed(self.seed)
        self.n_items_ = n_items
        self.module_ = self._build_module()
        trainer = self._trainer()
        validate = None
        if validation is not None and len(validation):
            validate = self._validator(validation, train, trainer)
        if history_path is None and trainer.options.checkpoint_dir:
            history_path = Path(trainer.options.checkpoint_dir) / "history.jsonl"
        result = trainer.fit(self.module_, data, validate, history_path=history_path)
        self.history_ = result.history
        self.best_epoch_ = result.best_epoch
        self.module_.to("cpu").eval()
        return self

    def _validator(self, validation, train: Interactions, trainer: Trainer):
        """A function returning the validation metrics (NDCG@k, Recall@k both ways; k from the monitor metric).
        Under DDP each rank scores only its share of the users (every world_size-th, from its rank) and the
        per-user sums are added over ranks, so every rank gets the metrics of all users at 1/world_size the cost."""
        from genrec.distributed import all_reduce_sum
        from genrec.evaluation.evaluate import evaluate

        monitor = trainer.options.monitor
        k = int(monitor.split("@")[1]) if "@" in monitor else 20
        keys = sorted(f"{m}@{k}" for m in ("ndcg", "recall", "recall_liang"))
        share = validation
        if trainer.world_size > 1:
            share = validation.subset(np.arange(trainer.rank, len(validation), trainer.world_size))

        def validate() -> dict[str, float]:
            values, n_users = [0.0] * len(keys), 0  # a rank with no users (fewer users than ranks) adds nothing
            if len(share):
                r = evaluate(self, share, ks=(k,), metrics=tuple(key.split("@")[0] for key in keys), train=None)
                values, n_users = [r.summary[key] for key in keys], r.n_users
            if trainer.world_size == 1:
                return dict(zip(keys, values))
            *sums, total_users = all_reduce_sum([v * n_users for v in values] + [n_users], trainer.device)
            return {key: total / max(total_users, 1.0) for key, total in zip(keys, sums)}

        return validate

    # scoring ----------------------------------------------------------------------------------------------
    def score(self, histories: Histories) -> np.ndarray:
        self._check_fitted(histories)
        module = self.module_
        device = next(module.parameters()).device
        was_training = module.training
        module.eval()
        with torch.no_grad():
            out = module.score(_to_device(self._score_input(histories), device))
        if was_training:
            module.train()
        return out.float().cpu().numpy()

    def to(self, device: str) -> TorchRecommender:
        """Move the fitted network (e.g. to 'cuda' for fast scoring)."""
        self.module_.to(resolve_device(device))
        return self

    # persistence ------------------------------------------------------------------------------------------
    def _get_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {k: v.detach().cpu().numpy() for k, v in self.module_.state_dict().items()}
        meta = {name: getattr(self, name) for name in self._meta_attributes}
        meta["history"] = getattr(self, "history_", [])
        meta["best_epoch"] = getattr(self, "best_epoch_", None)
        return arrays, meta

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        for name in self._meta_attributes:
            setattr(self, name, meta[name])
        self.history_ = meta.get("history", [])
        self.best_epoch_ = meta.get("best_epoch")
        self.n_items_ = meta.get("n_items_", getattr(self, "n_items_", None))
        self.module_ = self._build_module()
        self.module_.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})
        self.module_.eval()
