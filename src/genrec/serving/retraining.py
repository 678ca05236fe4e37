"""Fold the events recorded while serving into the next model: rebuild the training table, refit, bundle.

The training table is the bundle's histories (every training user, in order) followed by the store's events
with a sequence number above the bundle's watermark. Users the model never saw are appended to the user map;
the item set is the model's own (its output layer is fixed), so events for items it does not know are left
in the store and reported as skipped. The refit model is of the same class with the same hyperparameters,
and its bundle records the last sequence number it folded in, so the server's overlay after a swap holds
only what came later.

Bundles keep order, not time: the rebuilt table's timestamps are positions in each user's history (the
training history first, then the new events ordered by their timestamps), which is what models read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from genrec.data.interactions import IdMap, Interactions
from genrec.models.base import Bundle, get_model_class, load_bundle, save_bundle
from genrec.serving.served import WATERMARK_KEY
from genrec.serving.store import EventStore


@dataclass(frozen=True)
class RetrainReport:
    path: Path
    model: str
    n_users: int
    new_users: int
    events_used: int
    events_skipped: int
    skipped_items: tuple[str, ...]  # up to 20 of the unknown item ids
    events_through_seq: int


def _training_rows(bundle: Bundle) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(users, items, values, positions) of the bundle's histories, each user's items oldest first."""
    h = bundle.histories
    if h is None:
        return (np.zeros(0, np.int64),) * 2 + (np.zeros(0, np.float32), np.zeros(0, np.int64))
    indptr, items = (h.seq_indptr, h.seq_items) if h.has_order else (h.matrix.indptr, h.matrix.indices)
    lengths = np.diff(indptr)
    users = np.repeat(np.arange(h.n_users), lengths)
    positions = np.arange(len(items)) - np.repeat(indptr[:-1], lengths)
    # each (user, item)'s value from the CSR matrix (its keys are sorted: row-major with sorted indices)
    m = h.matrix
    keys = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr)) * m.shape[1] + m.indices
    wanted = users.astype(np.int64) * m.shape[1] + items
    values = m.data[np.searchsorted(keys, wanted).clip(0, max(len(keys) - 1, 0))] if len(keys) else np.ones(0)
    return users.astype(np.int64), np.asarray(items, np.int64), values.astype(np.float32), positions.astype(np.int64)


def training_interactions(bundle: Bundle, events: pd.DataFrame) -> tuple[Interactions, pd.DataFrame]:
    """The bundle's histories plus `events` (columns as EventStore reads give them) as one Interactions table
    over the model's item set; returns it with the events that were skipped (unknown items)."""
    n_items = int(bundle.model.n_items_)
    item_ids = bundle.item_ids if bundle.item_ids is not None else IdMap(np.arange(n_items), "item")
    item_index = pd.Index(item_ids.raw.astype(str).astype(object)).get_indexer(events["item"].astype(str))
    skipped, events = events[item_index < 0], events[item_index >= 0].assign(item_index=item_index[item_index >= 0])

    old_users = bundle.user_ids.raw if bundle.user_ids is not None and bundle.histories is not None else np.zeros(0)
    user_keys = pd.Index(np.asarray(old_users).astype(str).astype(object))
    user_index = user_keys.get_indexer(events["user"].astype(str))
    new_keys = pd.unique(events["user"].astype(str)[user_index < 0])
    user_ids = IdMap(old_users, "user") if len(new_keys) == 0 else \
        IdMap(np.concatenate([np.asarray(old_users).astype(str), new_keys]).astype(object), "user")
    user_index = np.where(user_index >= 0, user_index, len(old_users) + pd.Index(new_keys).get_indexer(
        events["user"].astype(str)))

    users, items, values, positions = _training_rows(bundle)
    # new events go after the user's training history, in (timestamp, seq) order
    history_length = np.bincount(users, minlength=len(user_ids))
    order = np.lexsort((events["seq"].to_numpy(), events["timestamp"].to_numpy(), user_index))
    sorted_users = user_index[order]
    group_start = np.searchsorted(sorted_users, sorted_users, side="left")
    event_positions = np.empty(len(order), np.int64)
    event_positions[order] = history_length[sorted_users] + np.arange(len(order)) - group_start
    train = Interactions(
        np.concatenate([users, user_index]), np.concatenate([items, events["item_index"].to_numpy()]),
        np.concatenate([values, events["value"].to_numpy(np.float32)]),
        np.concatenate([positions, event_positions]), user_ids, item_ids, bundle.item_attributes,
        source=f"{bundle.path} + {len(events)} events",
    )
    return train, skipped


def retrain(model_dir: str | Path, store: EventStore, out_dir: str | Path) -> RetrainReport:
    """Refit the bundle's model on its histories plus the events the store got since; write a new bundle."""
    bundle = load_bundle(model_dir, verify=True)
    watermark = int((bundle.meta.get("extra") or {}).get(WATERMARK_KEY, 0))
    events = store.events_since(watermark)
    train, skipped = training_interactions(bundle, events)
    if len(train) == 0:
        raise ValueError(f"{model_dir}: nothing to train on (the bundle has no histories and the store no events)")
    model = get_model_class(bundle.meta["model"]).from_config(bundle.meta["params"]).fit(train)
    through = int(events["seq"].max()) if len(events) else watermark
    old_users = 0 if bundle.user_ids is None or bundle.histories is None else len(bundle.user_ids)
    extra = {WATERMARK_KEY: through, "retrained_from": str(model_dir), "events_used": len(events) - len(skipped),
             "events_skipped": len(skipped)}
    path = save_bundle(model, out_dir, train, extra=extra)
    return RetrainReport(Path(path), bundle.meta["model"], train.n_users, train.n_users - old_users,
                         len(events) - len(skipped), len(skipped),
                         tuple(pd.unique(skipped["item"].astype(str))[:20]), through)
