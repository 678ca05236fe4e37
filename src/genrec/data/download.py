"""Fetch a MovieLens release from GroupLens, check its sha256, and unzip it next to where it was asked for.

MovieLens may not be redistributed, so genrec never ships it: users download it here (or by hand) and pass
the folder to `load_movielens`. The sha256 values are those the TensorFlow Datasets project records for the same
URLs (`tensorflow_datasets/url_checksums/movielens.txt`); GroupLens itself publishes only MD5 files. Where no
published sha256 is known the download is reported as unverified instead of guessed.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from pathlib import Path
from urllib.parse import urlparse

from genrec.data.interactions import DataError

_BASE = "https://files.grouplens.org/datasets/movielens"

# name -> (url, sha256 of the zip or None when no published value could be verified)
MOVIELENS: dict[str, tuple[str, str | None]] = {
    "ml-100k": (f"{_BASE}/ml-100k.zip", "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229"),
    "ml-1m": (f"{_BASE}/ml-1m.zip", "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20"),
    "ml-10m": (f"{_BASE}/ml-10m.zip", None),
    "ml-20m": (f"{_BASE}/ml-20m.zip", "96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3"),
    "ml-25m": (f"{_BASE}/ml-25m.zip", "8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa"),
    "ml-latest-small": (
        f"{_BASE}/ml-latest-small.zip",
        "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
    ),
}

_CHUNK = 1 << 20


def download_movielens(name: str, dest_dir: str | Path, timeout: float = 30) -> Path:
    """Download release `name` (a key of MOVIELENS) into `dest_dir`/`name` and return that folder.

    An existing non-empty `dest_dir`/`name` is returned as is. The zip goes to a temporary file, is checked
    against its sha256, unzipped into a temporary folder and renamed into place in one step, so an interrupted
    download never leaves a half-written release. `timeout` (seconds) bounds each network wait.
    """
    if name not in MOVIELENS:
        raise DataError(f"unknown MovieLens release {name!r}; known: {', '.join(MOVIELENS)}")
    url, sha256 = MOVIELENS[name]
    dest_dir = Path(dest_dir)
    target = dest_dir / name
    if target.is_dir() and any(target.iterdir()):
        return target
    dest_dir.mkdir(parents=True, exist_ok=True)
    archive = Path(tempfile.mkstemp(dir=dest_dir, prefix=f".{name}-", suffix=".zip.part")[1])
    try:
        digest = _fetch(url, archive, name, timeout)
        if sha256 is None:
            warnings.warn(f"{name}: no published sha256 is known, so the download is unverified "
                          f"(sha256 {digest})", stacklevel=2)
        elif digest != sha256:
            raise DataError(f"{name}: sha256 mismatch for {url}: expected {sha256}, got {digest}; the download "
                            "is corrupt or the file changed upstream")
        return _extract(archive, target, name)
    finally:
        archive.unlink(missing_ok=True)


def _fetch(url: str, path: Path, name: str, timeout: float) -> str:
    """Stream `url` into `path`; returns the sha256 hex digest of the bytes written."""
    host = urlparse(url).netloc or url
    advice = (f"download {url.rsplit('/', 1)[-1]} yourself from {url}, unzip it and pass --path /where/{name} "
              f"(load_movielens('/where/{name}') in Python)")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(path, "wb") as out:
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
    except urllib.error.HTTPError as err:
        raise DataError(f"{name}: {host} answered HTTP {err.code} ({err.reason}) for {url}; {advice}") from None
    except (TimeoutError, urllib.error.URLError, ConnectionError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", err)
        raise DataError(f"{name}: could not reach {host} ({reason}); {advice}") from None
    return digest.hexdigest()


def _extract(archive: Path, target: Path, name: str) -> Path:
    """Unzip into a temporary folder beside `target`, then rename the release folder to `target`."""
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}-"))
    try:
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(staging)  # ZipFile drops absolute paths and '..' from member names
        except zipfile.BadZipFile:
            raise DataError(f"{name}: the download is not a zip archive") from None
        entries = [p for p in staging.iterdir() if not p.name.startswith("__MACOSX")]
        # GroupLens zips hold one top-level folder (ml-10m's is named ml-10M100K); anything else is used as is
        folder = entries[0] if len(entries) == 1 and entries[0].is_dir() else staging
        try:
            os.replace(folder, target)
        except OSError:
            if not (target.is_dir() and any(target.iterdir())):  # not a concurrent download that won the race
                raise
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)
