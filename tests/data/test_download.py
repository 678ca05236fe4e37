"""download_movielens without the network: local zips over file:// and a throw-away http server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import re
import socket
import threading
import zipfile

import pytest

from genrec.data.download import MOVIELENS, download_movielens
from genrec.data.interactions import DataError
from genrec.data.loaders import load_movielens

U_DATA = "1\t10\t5\t881250949\n2\t10\t3\t881250950\n2\t11\t4\t881250951\n"


def make_zip(folder, top: str = "ml-100k") -> tuple:
    """A tiny ml-100k-shaped zip; returns (path, sha256)."""
    path = folder / "release.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{top}/u.data", U_DATA)
        zf.writestr(f"{top}/README", "tiny test release\n")
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(dest) -> list[str]:
    return sorted(p.name for p in dest.iterdir() if p.name.startswith("."))


@contextlib.contextmanager
def http_server(folder):
    """Serve `folder` on 127.0.0.1 (a free port) from a thread; stops when the block ends."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_table_points_at_grouplens_with_sha256_or_none():
    assert set(MOVIELENS) == {"ml-100k", "ml-1m", "ml-10m", "ml-20m", "ml-25m", "ml-latest-small"}
    for name, (url, sha256) in MOVIELENS.items():
        assert url == f"https://files.grouplens.org/datasets/movielens/{name}.zip"
        assert sha256 is None or re.fullmatch(r"[0-9a-f]{64}", sha256)


def test_unknown_name_lists_the_known_ones(tmp_path):
    with pytest.raises(DataError, match="unknown MovieLens release 'ml-3k'; known: ml-100k, ml-1m"):
        download_movielens("ml-3k", tmp_path)


def test_download_from_file_url_checks_extracts_and_loads(tmp_path, monkeypatch):
    archive, sha256 = make_zip(tmp_path)
    monkeypatch.setitem(MOVIELENS, "ml-100k", (archive.as_uri(), sha256))
    dest = tmp_path / "data"
    folder = download_movielens("ml-100k", dest)
    assert folder == dest / "ml-100k"
    assert sorted(p.name for p in folder.iterdir()) == ["README", "u.data"]
    assert leftovers(dest) == []
    assert len(load_movielens(folder)) == 3
    # a second call finds the folder and does not download again
    monkeypatch.setitem(MOVIELENS, "ml-100k", (f"http://127.0.0.1:{closed_port()}/ml-100k.zip", sha256))
    assert download_movielens("ml-100k", dest) == folder


def test_download_over_http_renames_the_release_folder(tmp_path, monkeypatch):
    archive, sha256 = make_zip(tmp_path, top="ml-10M100K")  # GroupLens' folder name inside ml-10m.zip
    with http_server(tmp_path) as base:
        monkeypatch.setitem(MOVIELENS, "ml-10m", (f"{base}/{archive.name}", sha256))
        folder = download_movielens("ml-10m", tmp_path / "data", timeout=5)
    assert folder == tmp_path / "data" / "ml-10m" and (folder / "u.data").read_text() == U_DATA


def test_http_error_is_one_line(tmp_path, monkeypatch):
    with http_server(tmp_path) as base:
        monkeypatch.setitem(MOVIELENS, "ml-1m", (f"{base}/missing.zip", None))
        with pytest.raises(DataError, match=r"HTTP 404.*--path /where/ml-1m"):
            download_movielens("ml-1m", tmp_path / "data", timeout=5)


def test_offline_says_host_unreachable_and_how_to_pass_a_path(tmp_path, monkeypatch):
    url = f"http://127.0.0.1:{closed_port()}/ml-1m.zip"
    monkeypatch.setitem(MOVIELENS, "ml-1m", (url, None))
    with pytest.raises(DataError) as info:
        download_movielens("ml-1m", tmp_path / "data", timeout=5)
    message = str(info.value)
    assert "\n" not in message
    assert "could not reach 127.0.0.1" in message
    assert "download ml-1m.zip yourself" in message and "--path /where/ml-1m" in message
    assert leftovers(tmp_path / "data") == [] and not (tmp_path / "data" / "ml-1m").exists()


def test_checksum_mismatch_leaves_nothing_behind(tmp_path, monkeypatch):
    archive, _ = make_zip(tmp_path)
    monkeypatch.setitem(MOVIELENS, "ml-100k", (archive.as_uri(), "0" * 64))
    with pytest.raises(DataError, match="sha256 mismatch"):
        download_movielens("ml-100k", tmp_path / "data")
    assert list((tmp_path / "data").iterdir()) == []


def test_unknown_checksum_warns_unverified(tmp_path, monkeypatch):
    archive, sha256 = make_zip(tmp_path)
    monkeypatch.setitem(MOVIELENS, "ml-10m", (archive.as_uri(), None))
    with pytest.warns(UserWarning, match=f"unverified.*{sha256}"):
        folder = download_movielens("ml-10m", tmp_path / "data")
    assert (folder / "u.data").exists()


def test_not_a_zip(tmp_path, monkeypatch):
    fake = tmp_path / "fake.zip"
    fake.write_text("<html>not found</html>")
    monkeypatch.setitem(MOVIELENS, "ml-1m", (fake.as_uri(), None))
    with pytest.warns(UserWarning), pytest.raises(DataError, match="not a zip archive"):
        download_movielens("ml-1m", tmp_path / "data")
    assert leftovers(tmp_path / "data") == []
