"""Scoring in a child process, so that the model's arithmetic never waits for the event loop's GIL.

A torch model releases the GIL inside each operation and takes it back between them. In the server's own
process a busy event loop holds the GIL most of the time, and every one of the model's operations then waits
for it: under load that multiplied Mult-VAE's scoring time several-fold on 2 cores. `ProcessScorer` loads
the bundle again in one or more child processes and scores batches there. The parent's event loop sends each
batch through a socket pair and is woken when the answer is there (`score_rows_async`, what the batcher
awaits): no worker thread in between, so no thread wake-up and no GIL hand-over per batch. With several
children, batches that form while others are being scored need not wait for them.

Messages are plain bytes: a JSON header and the numpy arrays' raw buffers (nothing is pickled).
"""

from __future__ import annotations

import asyncio
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
            import threadpoolctl
            import torch

            torch.set_num_threads(torch_threads)
            threadpoolctl.threadpool_limits(torch_threads)  # numpy's BLAS too (the two-stage scorer's products)
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


class _Child:
    """One scoring process and the parent's end of its socket pair."""

    def __init__(self, context, args: tuple):
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_scoring_process, name="genrec-scorer", daemon=True,
                                       args=(child, *args))
        self.process.start()
        child.close()
        self.inflight: asyncio.Future | None = None

    def wait_ready(self, model_dir, timeout_s: float) -> None:
        """Return once the child has loaded the bundle; raise TimeoutError or ValueError (why) otherwise."""
        if not self.conn.poll(timeout_s):
            raise TimeoutError(f"the scoring process did not load {model_dir} within {timeout_s} s")
        reply = self.conn.recv_bytes()
        if reply != b"R":
            raise ValueError(f"the scoring process could not load {model_dir}: {reply[1:].decode()}")

    def exchange(self, message: bytes) -> bytes:
        self.conn.send_bytes(message)
        return self.conn.recv_bytes()

    async def exchange_async(self, message: bytes) -> bytes:
        """`exchange` from the event loop: send, then wait for the reply without blocking the loop (it is read
        when the socket is readable)."""
        loop = asyncio.get_running_loop()
        while self.inflight is not None and not self.inflight.done():
            # the reply to a cancelled call is still on its way: let it land before sending the next batch
            await asyncio.wait([self.inflight])
        reply = self.inflight = loop.create_future()
        fd = self.conn.fileno()
        loop.add_reader(fd, self._on_reply, loop, fd, reply)
        try:
            # small messages fit the socket buffer; a large one blocks until the child, which is waiting for it,
            # has read it all
            self.conn.send_bytes(message)
        except OSError as e:
            loop.remove_reader(fd)
            reply.cancel()
            return b"E" + f"cannot send a batch: {e}".encode()
        return await asyncio.shield(reply)  # cancelled: the reply is still read and dropped by _on_reply

    def _on_reply(self, loop: asyncio.AbstractEventLoop, fd: int, reply: asyncio.Future) -> None:
        loop.remove_reader(fd)
        try:
            data = self.conn.recv_bytes()  # readable: the child has started writing and finishes the message
        except (EOFError, OSError) as e:
            data = b"E" + f"the scoring process stopped ({type(e).__name__})".encode()
        if not reply.done():
            reply.set_result(data)

    def stop(self, timeout_s: float) -> None:
        """Ask the child to stop after its current batch; kill it if it does not within timeout_s."""
        try:
            self.conn.send_bytes(b"")
        except (BrokenPipeError, OSError):
            pass
        self.process.join(timeout_s)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout_s)
        self.conn.close()


def _result(reply: bytes) -> list[tuple[np.ndarray, np.ndarray]]:
    if reply[:1] != b"O":
        raise RuntimeError(f"scoring process: {reply[1:].decode()}")
    return decode_results(reply[1:])


class ProcessScorer:
    """`score_rows` as ServedModel's (or, with rerank=(rank, candidates), a TwoStageScorer's), computed by
    `processes` child processes, each holding its own copy of the bundle. `score_rows_async` sends each batch to
    an idle child, the one used last first (its caches are warm): with several children, batches are scored in
    parallel (the batcher's `concurrency`)."""

    def __init__(self, model_dir: str | Path, verify: bool = True, imports: Sequence[str] = (),
                 torch_threads: int | None = None, start_timeout_s: float = 300.0, quantize: str | None = None,
                 rerank: tuple[int, int] | None = None, processes: int = 1):
        if processes < 1:
            raise ValueError(f"processes must be >= 1, got {processes}")
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited threads or locks
        args = (str(model_dir), verify, list(imports), torch_threads, quantize, rerank)
        self._children = [_Child(context, args) for _ in range(processes)]  # they load the bundle at once
        self._lock = threading.Lock()
        self._idle = list(reversed(self._children))  # a stack: the child used last is used next
        self._waiters: list[asyncio.Future] = []
        try:
            for child in self._children:
                child.wait_ready(model_dir, start_timeout_s)
        except (TimeoutError, ValueError):
            self.close()
            raise

    @property
    def processes(self) -> list[multiprocessing.process.BaseProcess]:
        return [child.process for child in self._children]

    def score_rows(self, rows: list[ScoringRow]) -> list[tuple[np.ndarray, np.ndarray]]:
        """From any thread, one batch at a time (through the first child); not while `score_rows_async` runs."""
        with self._lock:
            reply = self._children[0].exchange(encode_rows(rows))
        return _result(reply)

    async def score_rows_async(self, rows: list[ScoringRow]) -> list[tuple[np.ndarray, np.ndarray]]:
        """`score_rows` from the event loop, by an idle child (waiting for one when all are busy)."""
        message = encode_rows(rows)
        while not self._idle:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
        child = self._idle.pop()
        try:
            reply = await child.exchange_async(message)
        finally:
            self._idle.append(child)
            while self._waiters:
                waiter = self._waiters.pop(0)
                if not waiter.done():
                    waiter.set_result(None)
                    break
        return _result(reply)

    async def wait_idle(self, timeout_s: float = 10.0) -> None:
        """Until the replies to every `score_rows_async` have been read (before `close`)."""
        pending = [c.inflight for c in self._children if c.inflight is not None and not c.inflight.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        """Ask the children to stop after their current batch; kill those that do not within timeout_s."""
        with self._lock:
            for child in self._children:
                child.stop(timeout_s)
