"""The event log behind the service: interactions recorded after a model was trained, durable before the
client is told so.

One small interface, two back ends:
- `SQLiteEventStore` (the embedded default): WAL journal with synchronous=FULL, one transaction per append,
  committed (and fsynced) before `append` returns, so an event whose request got a 2xx survives a crash.
- `PostgresEventStore` (psycopg 3, optional): the same table and the same guarantees from a server.

An event is (user, item, value, timestamp) with raw ids as text; the store gives each a sequence number `seq`
that only grows (never reused, even after deletions), so "events since the model was trained" is `seq > N`.
Reads return a DataFrame with columns `EVENT_COLUMNS`, ordered by seq.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

EVENT_COLUMNS = ("seq", "user", "item", "value", "timestamp")


@dataclass(frozen=True)
class Event:
    """An interaction to record. timestamp: seconds since the epoch; None means the time of `append`."""

    user: str
    item: str
    value: float = 1.0
    timestamp: int | None = None


def _rows(events: Sequence[Event]) -> list[tuple[str, str, float, int]]:
    now = int(time.time())
    rows = []
    for i, e in enumerate(events):
        if not e.user or not e.item:
            raise ValueError(f"events[{i}]: user and item must be non-empty")
        if not math.isfinite(e.value):
            raise ValueError(f"events[{i}].value must be a finite number, got {e.value!r}")
        rows.append((str(e.user), str(e.item), float(e.value), now if e.timestamp is None else int(e.timestamp)))
    return rows


def _frame(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(EVENT_COLUMNS))
    return frame.astype({"seq": "int64", "user": "object", "item": "object", "value": "float64",
                         "timestamp": "int64"})


class EventStore(ABC):
    """What the service and `retrain` need from an event log."""

    @abstractmethod
    def append(self, events: Sequence[Event]) -> int:
        """Record `events` in one transaction, durable when this returns; returns how many were written."""

    @abstractmethod
    def events_since(self, seq: int = 0) -> pd.DataFrame:
        """Every event with sequence number > seq, oldest first."""

    @abstractmethod
    def user_events(self, user: str) -> pd.DataFrame:
        """One user's events, oldest first."""

    @abstractmethod
    def delete_user(self, user: str) -> int:
        """Delete every event of `user`; returns how many were deleted."""

    @abstractmethod
    def count(self) -> int:
        """Number of events stored."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection."""

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SQLiteEventStore(EventStore):
    """Events in one SQLite file (WAL, synchronous=FULL). ':memory:' gives a throwaway store for tests."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30.0)
        with self._lock:
            if self.path != ":memory:":
                mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if mode.lower() != "wal":
                    raise RuntimeError(f"{self.path}: SQLite refused WAL journal mode (got {mode})")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL,"
                " item_id TEXT NOT NULL, value REAL NOT NULL, ts INTEGER NOT NULL)"
            )
            self._db.execute("CREATE INDEX IF NOT EXISTS events_user ON events (user_id)")

    def __repr__(self) -> str:
        return f"SQLiteEventStore({self.path!r})"

    def append(self, events: Sequence[Event]) -> int:
        rows = _rows(events)
        if not rows:
            return 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT INTO events (user_id, item_id, value, ts) VALUES (?, ?, ?, ?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return len(rows)

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def events_since(self, seq: int = 0) -> pd.DataFrame:
        return _frame(self._query("SELECT seq, user_id, item_id, value, ts FROM events WHERE seq > ? ORDER BY seq",
                                  (int(seq),)))

    def user_events(self, user: str) -> pd.DataFrame:
        return _frame(self._query("SELECT seq, user_id, item_id, value, ts FROM events WHERE user_id = ?"
                                  " ORDER BY seq", (str(user),)))

    def delete_user(self, user: str) -> int:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                n = self._db.execute("DELETE FROM events WHERE user_id = ?", (str(user),)).rowcount
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return n

    def count(self) -> int:
        return int(self._query("SELECT count(*) FROM events")[0][0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


class PostgresEventStore(EventStore):
    """Events in a PostgreSQL table (psycopg 3). `dsn`: a libpq connection string or postgresql:// URL."""

    def __init__(self, dsn: str, table: str = "genrec_events"):
        try:
            import psycopg
        except ImportError as e:
            raise ImportError("the PostgreSQL event store needs psycopg: pip install 'genrec[postgres]'") from e
        if not table.isidentifier():
            raise ValueError(f"table must be a plain SQL identifier, got {table!r}")
        self.dsn, self.table = dsn, table
        self._lock = threading.Lock()
        self._db = psycopg.connect(dsn, autocommit=False)
        with self._lock, self._db.transaction():
            self._db.execute(
                f"CREATE TABLE IF NOT EXISTS {table} (seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
                " user_id TEXT NOT NULL, item_id TEXT NOT NULL, value DOUBLE PRECISION NOT NULL, ts BIGINT NOT NULL)"
            )
            self._db.execute(f"CREATE INDEX IF NOT EXISTS {table}_user ON {table} (user_id)")
        self._db.commit()

    def __repr__(self) -> str:
        return f"PostgresEventStore(table={self.table!r})"

    def append(self, events: Sequence[Event]) -> int:
        rows = _rows(events)
        if not rows:
            return 0
        users, items, values, stamps = (list(col) for col in zip(*rows))
        with self._lock, self._db.transaction():
            self._db.execute(
                f"INSERT INTO {self.table} (user_id, item_id, value, ts) SELECT * FROM"
                " unnest(%s::text[], %s::text[], %s::float8[], %s::bigint[])",
                (users, items, values, stamps),
            )
        return len(rows)

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock, self._db.transaction():
            return self._db.execute(sql, args).fetchall()

    def events_since(self, seq: int = 0) -> pd.DataFrame:
        return _frame(self._query(f"SELECT seq, user_id, item_id, value, ts FROM {self.table} WHERE seq > %s"
                                  " ORDER BY seq", (int(seq),)))

    def user_events(self, user: str) -> pd.DataFrame:
        return _frame(self._query(f"SELECT seq, user_id, item_id, value, ts FROM {self.table} WHERE user_id = %s"
                                  " ORDER BY seq", (str(user),)))

    def delete_user(self, user: str) -> int:
        with self._lock, self._db.transaction():
            return self._db.execute(f"DELETE FROM {self.table} WHERE user_id = %s", (str(user),)).rowcount

    def count(self) -> int:
        return int(self._query(f"SELECT count(*) FROM {self.table}")[0][0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


def open_store(spec: str | Path | EventStore) -> EventStore:
    """An event store from a spec: 'postgresql://...' (or 'postgres://'), 'sqlite:///path', a file path, or
    ':memory:'. An EventStore passes through unchanged."""
    if isinstance(spec, EventStore):
        return spec
    text = str(spec)
    if text.startswith(("postgresql://", "postgres://")):
        return PostgresEventStore(text)
    if text.startswith("sqlite:///"):  # sqlite:///relative.db, sqlite:////absolute/path.db
        text = text.removeprefix("sqlite:///")
    if not text:
        raise ValueError(f"store: empty path in {spec!r}")
    return SQLiteEventStore(text)
