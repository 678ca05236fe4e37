"""The canonical interaction table, the id maps beside it, and the per-user views models read.

`Interactions` holds one row per event: user index, item index, value (rating, count or 1.0) and timestamp
(seconds; -1 where the source has none). Raw ids live in two `IdMap`s, so every array here is dense
0..n-1 indices. Models never see raw ids; they see `Histories`: each user's items as a CSR row and, where
the order is known, as a time-ordered sequence.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp


class DataError(ValueError):
    """Bad input data. The message is one line that names the file, line or field."""


class IdMap:
    """A bijection between raw ids (ints or strings) and contiguous indices 0..n-1.

    `raw` is the array of raw ids in index order. Lookups go through a pandas Index (hash table),
    so mapping a million ids is one vectorised call.
    """

    def __init__(self, raw: np.ndarray | list | pd.Index, name: str = "id"):
        raw = np.asarray(raw)
        if raw.dtype.kind in "OUS":
            raw = raw.astype(str).astype(object)
        self.raw = raw
        self.name = name
        self._index = pd.Index(raw)
        if not self._index.is_unique:
            dup = self._index[self._index.duplicated()][0]
            raise DataError(f"{name} ids must be unique; {dup!r} appears more than once")

    def __len__(self) -> int:
        return len(self.raw)

    def __repr__(self) -> str:
        return f"IdMap({self.name}, n={len(self)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMap) and len(self) == len(other) and bool(np.all(self.raw == other.raw))

    @classmethod
    def from_values(cls, values: np.ndarray | pd.Series, name: str = "id") -> tuple[IdMap, np.ndarray]:
        """Map raw values to indices in order of first appearance; returns (IdMap, int32 codes)."""
        codes, uniques = pd.factorize(np.asarray(values), sort=False)
        return cls(np.asarray(uniques), name=name), codes.astype(np.int32)

    def index(self, raw_ids, missing: str = "raise") -> np.ndarray:
        """Indices of `raw_ids`. missing='raise' names the first unknown id; missing='ignore' returns -1 for it."""
        raw_ids = np.atleast_1d(np.asarray(raw_ids))
        if self.raw.dtype == object and raw_ids.dtype != object:
            raw_ids = raw_ids.astype(str).astype(object)
        elif self.raw.dtype != object and raw_ids.dtype == object:
            try:
                raw_ids = raw_ids.astype(self.raw.dtype)
            except (ValueError, TypeError):
                pass
        idx = self._index.get_indexer(raw_ids)
        if missing == "raise" and (idx < 0).any():
            bad = raw_ids[idx < 0][0]
            raise KeyError(f"unknown {self.name} id {bad!r}")
        return idx.astype(np.int64)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"index": np.arange(len(self), dtype=np.int64), self.name: self.raw})

    def save(self, path: str | Path) -> None:
        self.to_frame().to_parquet(path, index=False)

    @classmethod
    def load(cls, path: str | Path) -> IdMap:
        frame = pd.read_parquet(path)
        name = [c for c in frame.columns if c != "index"][0]
        return cls(frame.sort_values("index")[name].to_numpy(), name=name)


@dataclass(frozen=True)
class Histories:
    """What a model sees of a batch of users.

    matrix:    (n_users, n_items) float32 CSR; one column per item the user interacted with (value = rating/count).
    seq_indptr, seq_items: optional time-ordered item sequences (repeats allowed), CSR-style:
               the items of user u are seq_items[seq_indptr[u]:seq_indptr[u+1]], oldest first.
    user_ids:  optional raw user ids, for output only.
    """

    matrix: sp.csr_matrix
    seq_indptr: np.ndarray | None = None
    seq_items: np.ndarray | None = None
    user_ids: np.ndarray | None = None

    def __post_init__(self):
        if not sp.isspmatrix_csr(self.matrix):
            object.__setattr__(self, "matrix", sp.csr_matrix(self.matrix, dtype=np.float32))

    @property
    def n_users(self) -> int:
        return self.matrix.shape[0]

    @property
    def n_items(self) -> int:
        return self.matrix.shape[1]

    def __len__(self) -> int:
        return self.n_users

    @property
    def has_order(self) -> bool:
        return self.seq_indptr is not None

    def sequence(self, u: int) -> np.ndarray:
        """User u's items oldest first; without timestamps, the CSR row's items in index order."""
        if self.seq_indptr is None:
            m = self.matrix
            return m.indices[m.indptr[u] : m.indptr[u + 1]]
        return self.seq_items[self.seq_indptr[u] : self.seq_indptr[u + 1]]

    def sequences(self) -> list[np.ndarray]:
        return [self.sequence(u) for u in range(self.n_users)]

    def lengths(self) -> np.ndarray:
        """Number of distinct items per user (the CSR row sizes)."""
        return np.diff(self.matrix.indptr)

    def __getitem__(self, rows) -> Histories:
        """A subset of users (a slice, an index array, negative indices included, or a boolean mask), keeping
        order information."""
        rows = np.atleast_1d(np.arange(self.n_users)[rows])
        seq_indptr = seq_items = None
        if self.seq_indptr is not None:
            starts, ends = self.seq_indptr[rows], self.seq_indptr[rows + 1]
            seq_indptr = np.concatenate([[0], np.cumsum(ends - starts)]).astype(np.int64)
            seq_items = (
                np.concatenate([self.seq_items[s:e] for s, e in zip(starts, ends)]).astype(np.int64)
                if len(rows)
                else np.zeros(0, np.int64)
            )
        return Histories(
            self.matrix[rows],
            seq_indptr,
            seq_items,
            None if self.user_ids is None else self.user_ids[rows],
        )

    @classmethod
    def from_lists(cls, item_lists: list, n_items: int, user_ids=None, values: list | None = None) -> Histories:
        """Build from per-user lists of item indices, oldest first."""
        lengths = np.array([len(x) for x in item_lists], dtype=np.int64)
        seq_indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        seq_items = np.zeros(0, np.int64)
        if lengths.sum():
            seq_items = np.concatenate([np.asarray(x, dtype=np.int64) for x in item_lists])
        if len(seq_items) and (seq_items.min() < 0 or seq_items.max() >= n_items):
            raise DataError(f"item index out of range 0..{n_items - 1} in a history")
        rows = np.repeat(np.arange(len(item_lists)), lengths)
        vals = np.ones(len(seq_items), np.float32) if values is None else np.concatenate(values).astype(np.float32)
        matrix = _dedup_csr(rows, seq_items, vals, (len(item_lists), n_items))
        return cls(matrix, seq_indptr, seq_items, None if user_ids is None else np.asarray(user_ids))

    def binary(self) -> sp.csr_matrix:
        m = self.matrix.copy()
        m.data = np.ones_like(m.data)
        return m


def _dedup_csr(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, shape) -> sp.csr_matrix:
    """CSR where a repeated (row, col) keeps the last value (the latest event), not the sum."""
    if len(rows) == 0:
        return sp.csr_matrix(shape, dtype=np.float32)
    key = rows.astype(np.int64) * shape[1] + cols.astype(np.int64)
    # last occurrence of each key: unique on the reversed array
    _, last_rev = np.unique(key[::-1], return_index=True)
    keep = len(key) - 1 - last_rev
    m = sp.csr_matrix((vals[keep].astype(np.float32), (rows[keep], cols[keep])), shape=shape)
    m.sort_indices()
    return m


@dataclass
class Interactions:
    """One validated table of events: user, item, value, timestamp (all dense indices into the id maps).

    Build with `Interactions.from_frame` (raw ids) or `Interactions(...)` (indices already). Item and user
    attribute frames, when present, are indexed by item / user index (row i describes index i).
    """

    users: np.ndarray
    items: np.ndarray
    values: np.ndarray
    timestamps: np.ndarray
    user_ids: IdMap
    item_ids: IdMap
    item_attributes: pd.DataFrame | None = None
    user_attributes: pd.DataFrame | None = None
    source: str = "<memory>"
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        n = len(self.users)
        self.users = np.asarray(self.users, dtype=np.int32)
        self.items = np.asarray(self.items, dtype=np.int32)
        self.values = np.ones(n, np.float32) if self.values is None else np.asarray(self.values, dtype=np.float32)
        self.timestamps = (
            np.full(n, -1, np.int64) if self.timestamps is None else np.asarray(self.timestamps, dtype=np.int64)
        )
        for name in ("items", "values", "timestamps"):
            if len(getattr(self, name)) != n:
                raise DataError(f"{self.source}: column {name!r} has {len(getattr(self, name))} rows, users has {n}")
        if n and (self.users.min() < 0 or self.users.max() >= len(self.user_ids)):
            raise DataError(f"{self.source}: user index out of range of the user id map")
        if n and (self.items.min() < 0 or self.items.max() >= len(self.item_ids)):
            raise DataError(f"{self.source}: item index out of range of the item id map")
        if not np.isfinite(self.values).all():
            row = int(np.flatnonzero(~np.isfinite(self.values))[0])
            raise DataError(f"{self.source}: value is NaN or infinite at row {row}")

    # construction ---------------------------------------------------------------------------------------
    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        user: str = "user",
        item: str = "item",
        value: str | None = None,
        timestamp: str | None = None,
        item_attributes: pd.DataFrame | None = None,
        user_attributes: pd.DataFrame | None = None,
        item_ids: IdMap | None = None,
        user_ids: IdMap | None = None,
        source: str = "<frame>",
    ) -> Interactions:
        """From a frame of raw ids. Attribute frames are indexed by raw id and realigned to the id maps.

        Passing `item_ids`/`user_ids` reuses existing maps (ids not in them raise a DataError).
        """
        for col in (user, item, value, timestamp):
            if col is not None and col not in frame.columns:
                raise DataError(f"{source}: missing column {col!r} (columns: {', '.join(map(str, frame.columns))})")
        if len(frame) == 0:
            raise DataError(f"{source}: no interactions")
        for col in (user, item):
            if frame[col].isna().any():
                row = int(np.flatnonzero(frame[col].isna().to_numpy())[0])
                raise DataError(f"{source}: empty {col} id at row {row}")
        users, uids = _codes(frame[user].to_numpy(), user_ids, "user", source)
        items, iids = _codes(frame[item].to_numpy(), item_ids, "item", source)
        values = None
        if value is not None:
            values = pd.to_numeric(frame[value], errors="coerce").to_numpy(dtype=np.float64)
            if np.isnan(values).any():
                row = int(np.flatnonzero(np.isnan(values))[0])
                raise DataError(f"{source}: {value!r} is not a number at row {row}: {frame[value].iloc[row]!r}")
        stamps = None
        if timestamp is not None:
            ts = frame[timestamp]
            if pd.api.types.is_datetime64_any_dtype(ts):
                if ts.isna().any():
                    row = int(np.flatnonzero(ts.isna().to_numpy())[0])
                    raise DataError(f"{source}: {timestamp!r} is missing at row {row}")
                # seconds since the epoch whatever the resolution (pandas 3 parses to microseconds)
                epoch = pd.Timestamp(0, tz=getattr(ts.dt, "tz", None))
                stamps = ((ts - epoch) // pd.Timedelta(seconds=1)).to_numpy(dtype=np.int64)
            else:
                num = pd.to_numeric(ts, errors="coerce")
                if num.isna().any():
                    row = int(np.flatnonzero(num.isna().to_numpy())[0])
                    raise DataError(f"{source}: {timestamp!r} is not a number at row {row}: {ts.iloc[row]!r}")
                stamps = num.to_numpy(dtype=np.int64)
        return cls(
            users,
            items,
            values,
            stamps,
            uids,
            iids,
            _align(item_attributes, iids),
            _align(user_attributes, uids),
            source=source,
        )

    # views ------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.users)

    def __repr__(self) -> str:
        return f"Interactions({self.source}: {len(self)} events, {self.n_users} users, {self.n_items} items)"

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def has_timestamps(self) -> bool:
        return bool(len(self.timestamps)) and bool((self.timestamps >= 0).all())

    def csr(self, binary: bool = False) -> sp.csr_matrix:
        """(n_users, n_items) float32; a repeated pair keeps its latest value. binary=True puts 1.0 everywhere."""
        key = ("csr", binary)
        if key not in self._cache:
            order = self._time_order()
            m = _dedup_csr(
                self.users[order], self.items[order], self.values[order], (self.n_users, self.n_items)
            )
            if binary:
                m.data[:] = 1.0
            self._cache[key] = m
        return self._cache[key]

    def _time_order(self) -> np.ndarray:
        """Row order by (user, timestamp, original position): stable, so ties keep file order."""
        if "order" not in self._cache:
            self._cache["order"] = np.lexsort((np.arange(len(self)), self.timestamps, self.users))
        return self._cache["order"]

    def histories(self, users: np.ndarray | None = None) -> Histories:
        """Every user's history (or those in `users`), with time-ordered sequences."""
        if "histories" not in self._cache:
            order = self._time_order()
            counts = np.bincount(self.users, minlength=self.n_users)
            indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            self._cache["histories"] = Histories(
                self.csr(), indptr, self.items[order].astype(np.int64), self.user_ids.raw
            )
        h = self._cache["histories"]
        return h if users is None else h[np.asarray(users)]

    def item_popularity(self) -> np.ndarray:
        """Number of distinct users per item, (n_items,) int64."""
        return np.bincount(self.csr().indices, minlength=self.n_items).astype(np.int64)

    def to_frame(self, raw_ids: bool = True) -> pd.DataFrame:
        frame = pd.DataFrame(
            {
                "user": self.user_ids.raw[self.users] if raw_ids else self.users,
                "item": self.item_ids.raw[self.items] if raw_ids else self.items,
                "value": self.values,
                "timestamp": self.timestamps,
            }
        )
        return frame

    def select(self, mask: np.ndarray, source: str | None = None) -> Interactions:
        """The rows where `mask` holds, with the same id maps (indices stay valid)."""
        return Interactions(
            self.users[mask],
            self.items[mask],
            self.values[mask],
            self.timestamps[mask],
            self.user_ids,
            self.item_ids,
            self.item_attributes,
            self.user_attributes,
            source=source or self.source,
        )

    def compact(self) -> Interactions:
        """Drop users and items with no rows and re-index both maps (attributes follow)."""
        u_used = np.unique(self.users)
        i_used = np.unique(self.items)
        u_new = np.full(self.n_users, -1, np.int64)
        u_new[u_used] = np.arange(len(u_used))
        i_new = np.full(self.n_items, -1, np.int64)
        i_new[i_used] = np.arange(len(i_used))
        return Interactions(
            u_new[self.users],
            i_new[self.items],
            self.values,
            self.timestamps,
            IdMap(self.user_ids.raw[u_used], self.user_ids.name),
            IdMap(self.item_ids.raw[i_used], self.item_ids.name),
            None if self.item_attributes is None else self.item_attributes.iloc[i_used].reset_index(drop=True),
            None if self.user_attributes is None else self.user_attributes.iloc[u_used].reset_index(drop=True),
            source=self.source,
        )

    def fingerprint(self) -> str:
        """sha256 over the index arrays and values: two tables with the same events share it."""
        h = hashlib.sha256()
        for a in (self.users, self.items, self.values, self.timestamps):
            h.update(np.ascontiguousarray(a).tobytes())
        h.update(str((self.n_users, self.n_items)).encode())
        return h.hexdigest()[:16]


def _codes(values: np.ndarray, id_map: IdMap | None, kind: str, source: str) -> tuple[np.ndarray, IdMap]:
    if id_map is None:
        id_map, codes = IdMap.from_values(values, kind)
        return codes, id_map
    idx = id_map.index(values, missing="ignore")
    if (idx < 0).any():
        row = int(np.flatnonzero(idx < 0)[0])
        raise DataError(f"{source}: unknown {kind} id {values[row]!r} at row {row}")
    return idx.astype(np.int32), id_map


def _align(attributes: pd.DataFrame | None, ids: IdMap) -> pd.DataFrame | None:
    """Reorder an attribute frame indexed by raw id so that row i describes index i (missing rows are NaN)."""
    if attributes is None:
        return None
    index = attributes.index
    if ids.raw.dtype == object:
        index = index.astype(str)
    frame = attributes.copy()
    frame.index = index
    return frame.reindex(pd.Index(ids.raw)).reset_index(drop=True)
