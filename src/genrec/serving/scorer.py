"""Scoring in a child process, so that the model's arithmetic never waits for the event loop's GIL.

A torch model releases the GIL inside each operation and takes it back between them. In the server's own
process a busy event loop holds the GIL most of the time, and every one of the model's operations then waits
for it: under load that multiplied Mult-VAE's scoring time several-fold on 2 cores. `ProcessScorer` loads
the bundle a second time in a child process and scores batches there; the parent sends each batch and
reads the answer through a pipe (blocking only its batcher thread, which waits without the GIL).

Messages are plain bytes: a JSON header and the numpy arrays' raw buffers (nothing is pickled).
"""

from __future__ import annotations

import gc
import importlib
import json
import multiprocessing
import struct
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from genrec.serving.rerank import TwoStageScorer
from genrec.serving.served import ScoringRow, ServedModel


def _pack(header: dict, arrays: Sequence[np.ndarray]) -> bytes:
    head = json.dumps(header).encode()
    return b"".join([struct.pack("<I", len(head)), head, *(np.ascontiguousarray(a).tobytes() for a in arrays)])


def _unpack(message: bytes, dtypes: Sequence[tuple[str, type]], sizes: dict[str, int]) -> tuple[dict, dict]:
    (n,) = struct.unpack_from("<I", message)
    header = json.loads(message[4: 4 + n])
    arrays, offset = {}, 4 + n
    for name, dtype in dtypes:
        count = sizes[name] if name in sizes else header[f"n_{name}"]
        arrays[name] = np.frombuffer(message, dtype, count, offset)
        offset += count * np.dtype(dtype).itemsize
    return header, arrays


def encode_rows(rows: Sequence[ScoringRow]) -> bytes:
    masks = [np.packbits(r.allowed) for r in rows if r.allowed is not None]
    header = {"lengths": [len(r.items) for r in rows], "k": [r.k for r in rows],
              "exclude": [r.exclude_seen for r in rows], "masked": [r.allowed is not None for r in rows],
              "n_items": sum(len(r.items) for r in rows), "n_masks": sum(len(m) for m in masks)}
    return _pack(header, [np.concatenate([r.items for r in rows]).astype(np.int64),
                          np.concatenate([r.values for r in rows]).astype(np.float32),
                          np.concatenate(masks) if masks else np.zeros(0, np.uint8)])


def decode_rows(message: bytes, n_items: int) -> list[ScoringRow]:
    head, _ = _unpack(message, (), {})
    _, a = _unpack(message, (("items", np.int64), ("values", np.float32), ("masks", np.uint8)),
                   {"values": head["n_items"]})
    ends = np.cumsum(head["lengths"])
    mask_bytes, masks_used, rows = (n_items + 7) // 8, 0, []
    for i, (end, k, exclude, masked) in enumerate(zip(ends, head["k"], head["exclude"], head["masked"])):
        start = end - head["lengths"][i]
        allowed = None
        if masked:
            packed = a["masks"][masks_used * mask_bytes: (masks_used + 1) * mask_bytes]
            allowed = np.unpackbits(packed, count=n_items).astype(bool)
            masks_used += 1
        rows.append(ScoringRow(a["items"][start:end].copy(), a["values"][start:end].copy(), k, exclude, allowed))
    return rows


def encode_results(results: Sequence[tuple[np.ndarray, np.ndarray]]) -> bytes:
    lengths = [len(items) for items, _ in results]
    return _pack({"lengths": lengths, "n_items": sum(lengths)},
                 [np.concatenate([r[0] for r in results]).astype(np.int64) if results else np.zeros(0, np.int64),
                  np.concatenate([r[1] for r in results]).astype(np.float32) if results else np.zeros(0, np.float32)])


def decode_results(message: bytes) -> list[tuple[np.ndarray, np.ndarray]]:
    head, _ = _unpack(message, (), {})
    _, a = _unpack(message, (("items", np.int64), ("scores", np.float32)), {"scores": head["n_items"]})
    ends = np.cumsum(head["lengths"]).tolist()
    starts = [0, *ends[:-1]]
    return [(a["items"][s:e], a["scores"][s:e]) for s, e in zip(starts, ends)]


def _scoring_process(conn, model_dir: str, verify: bool, imports: list[str], torch_threads: int | None,
                     quantize: str | None, rerank: tuple[int, int] | None) -> None:
    """The child: load the bundle, then score each batch it is sent until it gets an empty message."""
    try:
        for module in imports:
            importlib.import_module(module)
        if torch_threads:
            import torch

            torch.set_num_threads(torch_threads)
        served = ServedModel.load(model_dir, verify=verify, quantize=quantize)
        scorer = TwoStageScorer(served, *rerank) if rerank else served
    except Exception as e:  # tell the parent why, then stop
        conn.send_bytes(b"E" + f"{type(e).__name__}: {e}".encode())
        return
    gc.freeze()  # the model lives as long as this process: keep it out of full collections (pauses)
    conn.send_bytes(b"R")
    while True:
        message = conn.recv_bytes()
        if not message:
            return
        try:
            reply = b"O" + encode_results(scorer.score_rows(decode_rows(message, served.n_items)))
        except Exception as e:
            reply = b"E" + f"{type(e).__name__}: {e}".encode()
        conn.send_bytes(reply)


class ProcessScorer:
    """`score_rows` as ServedModel's (or, with rerank=(rank, candidates), a TwoStageScorer's), computed by a
    child process holding its own copy of the bundle."""

    def __init__(self, model_dir: str | Path, verify: bool = True, imports: Sequence[str] = (),
                 torch_threads: int | None = None, start_timeout_s: float = 300.0, quantize: str | None = None,
                 rerank: tuple[int, int] | None = None):
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited threads or locks
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_scoring_process, name="genrec-scorer", daemon=True,
                                        args=(child, str(model_dir), verify, list(imports), torch_threads, quantize,
                                              rerank))
        self._process.start()
        child.close()
        self._lock = threading.Lock()
        if not self._conn.poll(start_timeout_s):
            self.close()
            raise TimeoutError(f"the scoring process did not load {model_dir} within {start_timeout_s} s")
        ready = self._conn.recv_bytes()
        if ready != b"R":
            self.close()
            raise ValueError(f"the scoring process could not load {model_dir}: {ready[1:].decode()}")

    def score_rows(self, rows: list[ScoringRow]) -> list[tuple[np.ndarray, np.ndarray]]:
        with self._lock:  # one batch at a time through the pipe
            self._conn.send_bytes(encode_rows(rows))
            reply = self._conn.recv_bytes()
        if reply[:1] != b"O":
            raise RuntimeError(f"scoring process: {reply[1:].decode()}")
        return decode_results(reply[1:])

    def close(self, timeout_s: float = 10.0) -> None:
        """Ask the child to stop after its current batch; kill it if it does not within timeout_s."""
        with self._lock:
            try:
                self._conn.send_bytes(b"")
            except (BrokenPipeError, OSError):
                pass
            self._process.join(timeout_s)
            if self._process.is_alive():
                self._process.kill()
                self._process.join(timeout_s)
            self._conn.close()
