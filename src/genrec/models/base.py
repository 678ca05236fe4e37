"""The one interface every recommender implements, the model registry, and model bundles on disk.

A model is fitted on `Interactions` and scores `Histories`: any batch of users described by their items,
known to the model or not (fold-in is the normal case). Hyperparameters are constructor arguments, stored
unchanged; learned state ends in `_`.

A bundle is a folder: `model.json` (class, hyperparameters, versions, sha256 of every file),
`weights.safetensors` (numpy arrays, no pickle), `items.parquet` and `users.parquet` (id maps) and
`histories.safetensors` (the training users' histories, so known users can be served by id).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import platform
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
import pydantic
import scipy.sparse as sp
from safetensors.numpy import load_file, save_file

from genrec.data.interactions import Histories, IdMap, Interactions

BUNDLE_FORMAT = 1
MODELS: dict[str, type[Recommender]] = {}


def register(name: str):
    """Class decorator: make a model available by `name` in configs, the CLI and bundles."""

    def wrap(cls: type[Recommender]) -> type[Recommender]:
        if name in MODELS and MODELS[name] is not cls:
            raise ValueError(f"model name {name!r} is already registered by {MODELS[name].__name__}")
        cls.name = name
        MODELS[name] = cls
        return cls

    return wrap


def get_model_class(name: str) -> type[Recommender]:
    import genrec.models  # noqa: F401  (registers the built-in models)

    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}") from None


@dataclass(frozen=True)
class Recommendations:
    """Top-k per user: items (n_users, k) int64 indices (-1 pads a short list), scores (n_users, k) float32."""

    items: np.ndarray
    scores: np.ndarray

    def to_frame(self, item_ids: IdMap | None = None, user_ids=None) -> pd.DataFrame:
        """Long format `user, rank, item, score` (rank from 1), dropping padding; raw ids where maps are given."""
        n, k = self.items.shape
        rows = np.repeat(np.arange(n), k)
        ranks = np.tile(np.arange(1, k + 1), n)
        items = self.items.ravel()
        keep = items >= 0
        users = rows if user_ids is None else np.asarray(user_ids)[rows]
        item_col = items[keep] if item_ids is None else item_ids.raw[items[keep]]
        return pd.DataFrame(
            {"user": users[keep], "rank": ranks[keep], "item": item_col, "score": self.scores.ravel()[keep]}
        )


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the k largest scores per row, best first; -inf entries become -1 padding."""
    n, m = scores.shape
    k = min(k, m)
    if k == 0:
        return np.zeros((n, 0), np.int64), np.zeros((n, 0), np.float32)
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < m else np.tile(np.arange(m), (n, 1))
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    items = np.take_along_axis(part, order, axis=1).astype(np.int64)
    vals = np.take_along_axis(vals, order, axis=1).astype(np.float32)
    items[~np.isfinite(vals) & (vals < 0)] = -1
    return items, vals


class Recommender:
    """Base class. Subclasses set their hyperparameters in __init__ (stored unchanged) and implement
    `fit`, `score`, and `_get_state`/`_set_state` for persistence."""

    name: ClassVar[str] = "base"
    #: True for models whose `score` needs `Histories` with order (sequence models).
    needs_order: ClassVar[bool] = False

    # hyperparameters ----------------------------------------------------------------------------------------
    @classmethod
    def param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        return [name for name, p in sig.parameters.items() if name != "self" and p.kind in kinds]

    def get_params(self) -> dict[str, Any]:
        return {p: getattr(self, p) for p in self.param_names()}

    @classmethod
    def config_model(cls) -> type[pydantic.BaseModel]:
        """A pydantic model of the constructor's arguments: validates configs, rejects unknown keys."""
        sig = inspect.signature(cls.__init__)
        hints = _resolved_hints(cls.__init__)
        fields = {}
        for name in cls.param_names():
            default = sig.parameters[name].default
            fields[name] = (hints.get(name, Any), ... if default is inspect.Parameter.empty else default)
        return pydantic.create_model(
            f"{cls.__name__}Config", __config__=pydantic.ConfigDict(extra="forbid", frozen=True), **fields
        )

    @classmethod
    def from_config(cls, params: dict[str, Any]) -> Self:
        validated = cls.config_model()(**params)
        return cls(**validated.model_dump())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # the interface ------------------------------------------------------------------------------------------
    def fit(self, train: Interactions, validation=None) -> Self:
        raise NotImplementedError

    def score(self, histories: Histories) -> np.ndarray:
        """(n_users, n_items) float32 scores for a batch of users described by their histories."""
        raise NotImplementedError

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "n_items_")

    def _check_fitted(self, histories: Histories | None = None) -> None:
        if not self.is_fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() first")
        if histories is not None and histories.n_items != self.n_items_:
            raise ValueError(
                f"histories have {histories.n_items} item columns, the model was fitted on {self.n_items_}"
            )

    def recommend(
        self,
        histories: Histories,
        k: int = 10,
        exclude_seen: bool = True,
        candidates: np.ndarray | None = None,
        batch_size: int = 1024,
    ) -> Recommendations:
        """Top-k items per user. exclude_seen drops the history's items; candidates (item indices) restricts
        the ranking to those items. Users are scored `batch_size` at a time, so memory stays bounded."""
        self._check_fitted(histories)
        allowed = None
        if candidates is not None:
            allowed = np.zeros(self.n_items_, bool)
            allowed[np.asarray(candidates, dtype=np.int64)] = True
        items, scores = [], []
        for start in range(0, max(histories.n_users, 1), batch_size):
            batch = histories[start : start + batch_size]
            if batch.n_users == 0:
                break
            s = np.array(self.score(batch), dtype=np.float32, copy=True)
            if exclude_seen:
                mask_seen(s, batch.matrix)
            if allowed is not None:
                s[:, ~allowed] = -np.inf
            i, v = top_k(s, k)
            items.append(i)
            scores.append(v)
        if not items:
            return Recommendations(np.zeros((0, k), np.int64), np.zeros((0, k), np.float32))
        return Recommendations(np.concatenate(items), np.concatenate(scores))

    # persistence --------------------------------------------------------------------------------------------
    def _get_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Learned arrays (saved to safetensors) and JSON-able learned metadata."""
        raise NotImplementedError

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        raise NotImplementedError

    def save(self, path: str | Path, train: Interactions | None = None, extra: dict | None = None) -> Path:
        """Write a bundle folder. With `train`, its id maps and histories go along (serving known users)."""
        self._check_fitted()
        return save_bundle(self, path, train, extra)

    @classmethod
    def load(cls, path: str | Path) -> Self:
        model = load_bundle(path).model
        if cls is not Recommender and not isinstance(model, cls):
            raise TypeError(f"{path} holds a {type(model).__name__}, not a {cls.__name__}")
        return model


def mask_seen(scores: np.ndarray, seen: sp.csr_matrix) -> None:
    """Set scores of each row's history items to -inf, in place."""
    rows = np.repeat(np.arange(seen.shape[0]), np.diff(seen.indptr))
    scores[rows, seen.indices] = -np.inf


def _resolved_hints(fn) -> dict[str, Any]:
    import typing

    try:
        return typing.get_type_hints(fn)
    except Exception:
        return {}


# bundles ------------------------------------------------------------------------------------------------------
@dataclass
class Bundle:
    model: Recommender
    meta: dict[str, Any]
    item_ids: IdMap | None
    user_ids: IdMap | None
    histories: Histories | None
    item_attributes: pd.DataFrame | None
    path: Path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _histories_arrays(h: Histories) -> dict[str, np.ndarray]:
    m = h.matrix
    arrays = {
        "indptr": m.indptr.astype(np.int64),
        "indices": m.indices.astype(np.int64),
        "data": m.data.astype(np.float32),
        "shape": np.array(m.shape, np.int64),
    }
    if h.seq_indptr is not None:
        arrays["seq_indptr"] = h.seq_indptr.astype(np.int64)
        arrays["seq_items"] = h.seq_items.astype(np.int64)
    return arrays


def _histories_from_arrays(a: dict[str, np.ndarray], user_ids=None) -> Histories:
    m = sp.csr_matrix((a["data"], a["indices"], a["indptr"]), shape=tuple(a["shape"]))
    return Histories(m, a.get("seq_indptr"), a.get("seq_items"), user_ids)


def save_bundle(model: Recommender, path, train: Interactions | None = None, extra: dict | None = None) -> Path:
    """Write the bundle into a temporary sibling folder, then rename: a crash never leaves half a bundle."""
    import torch

    import genrec

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    arrays, state_meta = model._get_state()
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp / "weights.safetensors"))
    if train is not None:
        train.item_ids.save(tmp / "items.parquet")
        train.user_ids.save(tmp / "users.parquet")
        save_file(_histories_arrays(train.histories()), str(tmp / "histories.safetensors"))
        if train.item_attributes is not None:
            train.item_attributes.to_parquet(tmp / "item_attributes.parquet", index=False)
    meta = {
        "format": BUNDLE_FORMAT,
        "model": model.name,
        "class": type(model).__name__,
        "params": _jsonable(model.get_params()),
        "state": _jsonable(state_meta),
        "n_items": int(model.n_items_),
        "data": None if train is None else {"source": train.source, "fingerprint": train.fingerprint(),
                                            "n_users": train.n_users, "n_items": train.n_items,
                                            "n_interactions": len(train)},
        "versions": {"genrec": genrec.__version__, "numpy": np.__version__, "torch": torch.__version__,
                     "python": platform.python_version()},
        "extra": _jsonable(extra or {}),
        "sha256": {f.name: _sha256(f) for f in sorted(tmp.iterdir())},
    }
    (tmp / "model.json").write_text(json.dumps(meta, indent=2))
    if path.exists():
        old = path.with_name(f".{path.name}.old")
        if old.exists():
            _rmtree(old)
        os.replace(path, old)
        os.replace(tmp, path)
        _rmtree(old)
    else:
        os.replace(tmp, path)
    return path


def load_bundle(path, verify: bool = True) -> Bundle:
    """Read a bundle; with verify, every file's sha256 must match model.json (tampering is an error)."""
    path = Path(path)
    meta_file = path / "model.json"
    if not meta_file.exists():
        raise FileNotFoundError(f"{path}: not a model bundle (no model.json)")
    meta = json.loads(meta_file.read_text())
    if verify:
        for name, digest in meta.get("sha256", {}).items():
            f = path / name
            if not f.exists():
                raise ValueError(f"{path}: bundle file {name} is missing")
            if _sha256(f) != digest:
                raise ValueError(f"{path}: {name} does not match the sha256 in model.json")
    cls = get_model_class(meta["model"])
    model = cls.from_config(meta["params"])
    model.n_items_ = meta["n_items"]
    model._set_state(load_file(str(path / "weights.safetensors")), meta["state"])
    item_ids = IdMap.load(path / "items.parquet") if (path / "items.parquet").exists() else None
    user_ids = IdMap.load(path / "users.parquet") if (path / "users.parquet").exists() else None
    histories = None
    if (path / "histories.safetensors").exists():
        histories = _histories_from_arrays(
            load_file(str(path / "histories.safetensors")), None if user_ids is None else user_ids.raw
        )
    attrs = pd.read_parquet(path / "item_attributes.parquet") if (path / "item_attributes.parquet").exists() else None
    return Bundle(model, meta, item_ids, user_ids, histories, attrs, path)


def _rmtree(p: Path) -> None:
    import shutil

    shutil.rmtree(p, ignore_errors=True)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj
