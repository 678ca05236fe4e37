"""Fixtures for the serving tests: a small bundle with string ids and item attributes, an in-process client,
and `running_server`, which starts a real uvicorn process on 127.0.0.1 and always stops it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from genrec.data.interactions import Interactions
from genrec.serving.app import create_app
from tests.conftest import block_interactions
from tests.serving.cooccurrence import Cooccurrence

REPO = Path(__file__).resolve().parents[2]
MODEL_MODULE = "tests.serving.cooccurrence"
API_KEY = "test-key"


def string_id_interactions() -> Interactions:
    """block_interactions with ids 'u0'.. and 'i0'.., and attributes category (c0..c3) and price_band."""
    blocks = block_interactions()
    frame = blocks.to_frame()
    frame["user"] = "u" + frame["user"].astype(str)
    frame["item"] = "i" + frame["item"].astype(str)
    items = blocks.item_ids.raw
    attrs = pd.DataFrame({"category": blocks.item_attributes["category"].to_numpy(),
                          "price_band": [("low", "mid", "high")[int(i) % 3] for i in items]},
                         index=[f"i{i}" for i in items])
    return Interactions.from_frame(frame, "user", "item", "value", "timestamp", item_attributes=attrs,
                                   source="string ids")


@pytest.fixture(scope="session")
def train() -> Interactions:
    return string_id_interactions()


@pytest.fixture(scope="session")
def bundle_dir(train, tmp_path_factory) -> Path:
    return Cooccurrence().fit(train).save(tmp_path_factory.mktemp("bundle") / "model", train)


@pytest.fixture
def client(bundle_dir, tmp_path):
    app = create_app(bundle_dir, store=tmp_path / "events.db", api_key=API_KEY, max_wait_ms=1.0)
    with TestClient(app) as c:
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(bundle_dir: Path, store: Path, port: int, api_key: str | None = API_KEY) -> subprocess.Popen:
    env = {**os.environ, "GENREC_MODEL_DIR": str(bundle_dir), "GENREC_STORE": str(store),
           "GENREC_IMPORTS": MODEL_MODULE, "GENREC_API_KEY": api_key or "", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "genrec.serving.app:app_from_env", "--host", "127.0.0.1",
           "--port", str(port), "--no-access-log", "--log-level", "warning"]
    log = tempfile.TemporaryFile()  # a file, not a pipe: a chatty server can never block on a full pipe
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    proc.log = log
    return proc


def server_log(proc: subprocess.Popen) -> str:
    proc.log.seek(0)
    return proc.log.read().decode(errors="replace")[-3000:]


def wait_healthy(proc: subprocess.Popen, base: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {server_log(proc)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/health", timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{base}/health did not answer within {timeout_s} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
    proc.log.close()


@contextlib.contextmanager
def running_server(bundle_dir: Path, store: Path, api_key: str | None = API_KEY):
    """A real uvicorn process on 127.0.0.1:<free port>; yields (base url, process); stops it at the end."""
    port = free_port()
    proc = start_server(bundle_dir, store, port, api_key)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(proc, base)
        yield base, proc
    finally:
        stop(proc)
