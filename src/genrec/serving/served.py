"""The model being served: a loaded bundle with what requests need from it, ready to score batches.

`ServedModel` turns raw ids into indices and back, finds a known user's training history, restricts the
ranking to items whose attributes match a filter, ranks by popularity for users with nothing to go on, and
scores a batch of requests in one `model.score` call (`score_rows`, run by the micro-batcher on its worker
thread). It is read-only once built, so a request can keep using it after a newer one was swapped in.

Raw ids arrive as text (JSON numbers are turned into text first) and match a bundle id by its text form, so
the item 17 of an integer id map is found by 17 and by "17"; responses give ids as the bundle holds them.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from genrec.data.interactions import Histories, IdMap
from genrec.models.base import Bundle, load_bundle

#: the bundle's model.json "extra" key where `retrain` records the last event sequence number it folded in
WATERMARK_KEY = "events_through_seq"


QUANTIZE_CHOICES = ("int8",)


def quantized(model, quantize: str | None):
    """The model to serve: itself, or for quantize='int8' a copy with 8-bit weights
    (`genrec.compress.quantize_int8`, Mult-VAE and Mult-DAE only): ~4x less CPU per scored user on the 40,981-item
    Gowalla decoder, at the cost of small changes in the ranking (see benchmarks/results/serving.md)."""
    if not quantize or quantize == "none":
        return model
    if quantize not in QUANTIZE_CHOICES:
        raise ValueError(f"quantize must be one of none, {', '.join(QUANTIZE_CHOICES)}; got {quantize!r}")
    from genrec.compress import quantize_int8

    try:
        return quantize_int8(model)
    except TypeError as e:
        raise ValueError(f"quantize={quantize!r}: {e}") from None


class FilterError(ValueError):
    """A filter names an attribute the items do not have, or has a value of the wrong shape."""


@dataclass(frozen=True)
class ScoringRow:
    """One request for `score_rows`. items/values: the history, oldest first (int64 indices, float32);
    allowed: (n_items,) bool candidate mask or None for all items."""

    items: np.ndarray
    values: np.ndarray
    k: int
    exclude_seen: bool
    allowed: np.ndarray | None = None


class ServedModel:
    """A bundle prepared for serving. Build with `ServedModel.load(path)` or from a `Bundle`."""

    def __init__(self, bundle: Bundle, max_cached_filters: int = 256, quantize: str | None = None):
        self.bundle, self.model, self.quantize = bundle, quantized(bundle.model, quantize), quantize
        self.n_items = int(self.model.n_items_)
        self.item_ids = bundle.item_ids if bundle.item_ids is not None else IdMap(np.arange(self.n_items), "item")
        if len(self.item_ids) != self.n_items:
            raise ValueError(f"{bundle.path}: items.parquet has {len(self.item_ids)} ids, the model {self.n_items}")
        # text form -> index; a dict is the fastest lookup for the few ids of one request
        self._item_lookup = dict(zip(self.item_ids.raw.astype(str).tolist(), range(self.n_items)))
        users = bundle.user_ids.raw if bundle.user_ids is not None and bundle.histories is not None else []
        self._user_keys = pd.Index(np.asarray(users).astype(str).astype(object))
        self.histories = bundle.histories
        self.attributes = bundle.item_attributes
        if self.attributes is not None and len(self.attributes) != self.n_items:
            raise ValueError(f"{bundle.path}: item_attributes.parquet has {len(self.attributes)} rows, "
                             f"the model {self.n_items} items")
        self.watermark = int((bundle.meta.get("extra") or {}).get(WATERMARK_KEY, 0))
        self.popularity = self._popularity()
        self._popularity_order = np.argsort(-self.popularity, kind="stable")
        self._masks: OrderedDict[str, np.ndarray] = OrderedDict()
        self._masks_lock = threading.Lock()
        self._max_cached_filters = max_cached_filters

    @classmethod
    def load(cls, path: str | Path, verify: bool = True, quantize: str | None = None) -> ServedModel:
        """Load a bundle folder (sha256 of every file checked against model.json when verify); quantize:
        see `quantized`."""
        return cls(load_bundle(path, verify=verify), quantize=quantize)

    @property
    def name(self) -> str:
        return str(self.bundle.meta.get("model", type(self.model).__name__))

    @property
    def n_users(self) -> int:
        return len(self._user_keys)

    def info(self) -> dict[str, Any]:
        data = self.bundle.meta.get("data") or {}
        return {"model": self.name, "class": type(self.model).__name__, "path": str(self.bundle.path),
                "n_items": self.n_items, "n_users": self.n_users, "fingerprint": str(data.get("fingerprint", "")),
                "events_through_seq": self.watermark, "quantize": self.quantize or "none"}

    # ids -----------------------------------------------------------------------------------------------------
    def item_index(self, keys: Sequence[str]) -> np.ndarray:
        """(len(keys),) int64 item indices; -1 for ids the model does not know."""
        lookup = self._item_lookup
        return np.fromiter((lookup.get(key, -1) for key in keys), np.int64, len(keys))

    def raw_items(self, indices: np.ndarray) -> list:
        """Raw ids (as the bundle holds them: int or str) of item indices."""
        return self.item_ids.raw[np.asarray(indices, np.int64)].tolist()

    def user_history(self, user: str) -> tuple[np.ndarray, np.ndarray] | None:
        """A training user's (items oldest first, values), or None when the bundle does not know the user."""
        try:
            row = int(self._user_keys.get_loc(user))
        except KeyError:
            return None
        items = np.asarray(self.histories.sequence(row), np.int64)
        m = self.histories.matrix
        cols, vals = m.indices[m.indptr[row]: m.indptr[row + 1]], m.data[m.indptr[row]: m.indptr[row + 1]]
        pos = np.searchsorted(cols, items).clip(0, max(len(cols) - 1, 0))
        values = vals[pos] if len(cols) else np.ones(len(items), np.float32)
        return items, np.asarray(values, np.float32)

    # candidates ---------------------------------------------------------------------------------------------
    def candidate_mask(self, filters: dict[str, Any] | None) -> np.ndarray | None:
        """(n_items,) bool: items whose attribute equals the value (or one of the list's values) for every
        key of `filters`; None when there is nothing to filter on."""
        if not filters:
            return None
        key = json.dumps(filters, sort_keys=True, default=str)
        with self._masks_lock:
            if key in self._masks:
                self._masks.move_to_end(key)
                return self._masks[key]
        if self.attributes is None:
            raise FilterError("filters: this model's bundle has no item attributes to filter on")
        mask = np.ones(self.n_items, bool)
        for name, wanted in filters.items():
            if name not in self.attributes.columns:
                known = ", ".join(map(str, self.attributes.columns))
                raise FilterError(f"filters.{name}: unknown item attribute (known: {known})")
            values = wanted if isinstance(wanted, list) else [wanted]
            mask &= self.attributes[name].isin(values).to_numpy()
        mask.setflags(write=False)
        with self._masks_lock:
            self._masks[key] = mask
            while len(self._masks) > self._max_cached_filters:
                self._masks.popitem(last=False)
        return mask

    # ranking ------------------------------------------------------------------------------------------------
    def _popularity(self) -> np.ndarray:
        """Distinct training users per item; without training histories, the model's scores for an empty one."""
        if self.histories is not None:
            return np.bincount(self.histories.matrix.indices, minlength=self.n_items).astype(np.float32)
        try:
            scores = self.model.score(Histories.from_lists([[]], self.n_items))
            return np.nan_to_num(np.asarray(scores, np.float32)[0], nan=0.0, neginf=0.0, posinf=0.0)
        except Exception:  # a model that cannot score an empty history: every item ties
            return np.zeros(self.n_items, np.float32)

    def popular(self, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The k most popular items (among `allowed`), with their popularity as the score."""
        order = self._popularity_order if allowed is None else self._popularity_order[allowed[self._popularity_order]]
        top = order[:k]
        return top.astype(np.int64), self.popularity[top]

    def score_rows(self, rows: list[ScoringRow]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Score every row's history in one `model.score` call, then per row: drop its history items
        (exclude_seen) and items outside its candidates, and keep its top k. Returns (items, scores) per row,
        best first, shorter than k when fewer items are allowed."""
        histories = Histories.from_lists([r.items for r in rows], self.n_items, values=[r.values for r in rows])
        # a copy: some models return read-only or broadcast arrays. Torch does the rest (it releases the GIL).
        scores = torch.nan_to_num_(torch.tensor(np.asarray(self.model.score(histories)), dtype=torch.float32),
                                   nan=-np.inf)
        for i, row in enumerate(rows):
            if row.exclude_seen and len(row.items):
                scores[i, torch.from_numpy(row.items)] = -np.inf
            if row.allowed is not None:
                scores[i].masked_fill_(torch.from_numpy(~row.allowed), -np.inf)
        k_max = min(max(r.k for r in rows), self.n_items)
        values, indices = torch.topk(scores, k_max, dim=1)
        return per_row_top(values.numpy(), indices.numpy(), rows)


def per_row_top(values: np.ndarray, indices: np.ndarray, rows) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each row's first `row.k` (item indices, scores) of a batch's top-k, items scored -inf (excluded) dropped."""
    out = []
    for i, row in enumerate(rows):
        v, idx = values[i, : row.k], indices[i, : row.k]
        keep = np.isfinite(v)
        out.append((idx[keep].astype(np.int64), v[keep]))
    return out
