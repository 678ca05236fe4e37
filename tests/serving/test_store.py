"""The event store contract, kept by SQLite (always) and PostgreSQL (when its binaries and psycopg are here)."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from genrec.serving.store import Event, PostgresEventStore, SQLiteEventStore, open_store
from tests.serving.conftest import free_port


class StoreContract:
    def make_store(self):
        raise NotImplementedError

    @pytest.fixture
    def store(self):
        store = self.make_store()
        yield store
        store.close()

    def test_append_returns_the_number_written_and_numbers_events_in_order(self, store):
        assert store.append([Event("u1", "a"), Event("u2", "b", 2.5, 100)]) == 2
        assert store.append([Event("u1", "c", timestamp=200)]) == 1
        events = store.events_since(0)
        assert list(events["item"]) == ["a", "b", "c"]
        assert events["seq"].is_monotonic_increasing and events["seq"].is_unique
        assert list(events.columns) == ["seq", "user", "item", "value", "timestamp"]
        assert events.loc[1, "value"] == 2.5 and events.loc[1, "timestamp"] == 100
        assert store.count() == 3

    def test_missing_timestamp_is_the_time_of_append(self, store):
        before = int(time.time())
        store.append([Event("u", "i")])
        assert before <= store.events_since(0)["timestamp"].iloc[0] <= int(time.time()) + 1

    def test_events_since_returns_only_later_sequence_numbers(self, store):
        store.append([Event("u", str(i)) for i in range(5)])
        seqs = list(store.events_since(0)["seq"])
        assert list(store.events_since(seqs[2])["item"]) == ["3", "4"]
        assert len(store.events_since(seqs[-1])) == 0

    def test_user_events_and_delete_user(self, store):
        store.append([Event("alice", "x"), Event("bob", "y"), Event("alice", "z")])
        assert list(store.user_events("alice")["item"]) == ["x", "z"]
        assert store.delete_user("alice") == 2
        assert len(store.user_events("alice")) == 0 and store.count() == 1
        assert store.delete_user("nobody") == 0

    def test_sequence_numbers_are_never_reused_after_a_deletion(self, store):
        store.append([Event("alice", "x")])
        last = int(store.events_since(0)["seq"].max())
        store.delete_user("alice")
        store.append([Event("bob", "y")])
        assert int(store.events_since(0)["seq"].iloc[0]) > last

    def test_an_empty_append_writes_nothing(self, store):
        assert store.append([]) == 0 and store.count() == 0

    def test_a_non_finite_value_is_refused_and_nothing_is_written(self, store):
        with pytest.raises(ValueError, match=r"events\[1\]\.value"):
            store.append([Event("u", "a"), Event("u", "b", float("nan"))])
        assert store.count() == 0


class TestSQLiteEventStore(StoreContract):
    @pytest.fixture(autouse=True)
    def _path(self, tmp_path):
        self.path = tmp_path / "events.db"

    def make_store(self):
        return SQLiteEventStore(self.path)

    def test_uses_wal_and_full_synchronous_commits(self, store):
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        with contextlib.closing(sqlite3.connect(self.path)) as other:
            assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    def test_events_are_on_disk_when_append_returns(self, store):
        store.append([Event("u", "a"), Event("u", "b")])
        with contextlib.closing(sqlite3.connect(self.path)) as other:  # another connection sees them committed
            assert other.execute("SELECT count(*) FROM events").fetchone()[0] == 2

    def test_reopening_keeps_the_events(self, store):
        store.append([Event("u", "a")])
        store.close()
        with SQLiteEventStore(self.path) as again:
            assert list(again.events_since(0)["item"]) == ["a"]


def test_open_store_reads_paths_and_urls(tmp_path):
    with open_store(tmp_path / "a.db") as a, open_store(f"sqlite:///{tmp_path}/b.db") as b:
        assert isinstance(a, SQLiteEventStore) and a.path == str(tmp_path / "a.db")
        assert b.path == f"{tmp_path}/b.db"
    with open_store(":memory:") as memory:
        assert open_store(memory) is memory


# PostgreSQL: a throwaway server on 127.0.0.1, started with initdb/pg_ctl and stopped by the fixture --------------
def _pg_bin() -> Path | None:
    """The folder of initdb and pg_ctl: Debian's versioned folders first, else wherever PATH has them."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    on_path = shutil.which("pg_ctl")
    return Path(found[-1]).parent if found else Path(on_path).parent if on_path else None


@pytest.fixture(scope="module")
def postgres_dsn(tmp_path_factory):
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL binaries are not installed (no initdb/pg_ctl)")
    pytest.importorskip("psycopg", reason="psycopg is not installed")
    as_root = os.geteuid() == 0
    # PostgreSQL refuses to run as root: then the data folder belongs to the postgres user, under /tmp
    base = Path(tempfile.mkdtemp(prefix="genrec-pg-")) if as_root else tmp_path_factory.mktemp("pg")
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    if as_root:
        shutil.chown(base, "postgres")
    data, port = base / "data", free_port()
    run = lambda *cmd: subprocess.run([*prefix, *cmd], check=True, capture_output=True, timeout=120)
    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-U", "genrec", "--auth=trust", "-E", "UTF8")
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-t", "60", "-l", str(base / "log"), "-o",
            f"-h 127.0.0.1 -p {port} -k {base} -F", "start")
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"could not start PostgreSQL: {e}")
    try:
        yield f"postgresql://genrec@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


class TestPostgresEventStore(StoreContract):
    @pytest.fixture(autouse=True)
    def _dsn(self, postgres_dsn):
        self.dsn = postgres_dsn

    def make_store(self):
        store = PostgresEventStore(self.dsn)
        with store._db.transaction():
            store._db.execute(f"TRUNCATE {store.table} RESTART IDENTITY")
        return store

    def test_open_store_takes_a_postgresql_url(self):
        with open_store(self.dsn) as store:
            assert isinstance(store, PostgresEventStore)

    def test_events_are_committed_when_append_returns(self, store):
        store.append([Event("u", "a")])
        with PostgresEventStore(self.dsn) as other:
            assert other.count() == 1
