"""What `genrec serve` and `genrec retrain` do, as plain functions the CLI calls (and notebooks can too)."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path

from genrec.serving.retraining import RetrainReport
from genrec.serving.retraining import retrain as _retrain
from genrec.serving.store import EventStore, open_store


def serve(model_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, store: str | Path = "events.db",
          api_key: str | None = None, max_batch: int = 64, max_wait_ms: float = 0.0,
          max_body_bytes: int = 1_000_000, imports: Sequence[str] = (), torch_threads: int | None = 1,
          access_log: bool = True, log_level: str = "info", switch_interval_ms: float = 0.5,
          scoring_process: bool | int = False, quantize: str | None = None, rerank: str | None = None) -> None:
    """Serve the bundle in `model_dir` over HTTP with uvicorn (one process; micro-batching needs the
    requests in one place) until interrupted. store: SQLite file, 'sqlite:///path' or 'postgresql://...';
    api_key: enables /v1/admin/*; imports: modules that register models which are not built in;
    switch_interval_ms: the interpreter's thread switch interval (see `genrec.serving.app.tune_interpreter`);
    scoring_process: score in a child process (see `genrec.serving.scorer`), or in that many (an int > 1);
    quantize: 'int8' serves an 8-bit copy of a Mult-VAE/DAE (about 4x less CPU per request on a 41k-item decoder;
    rankings change slightly);
    rerank: 'RANK:CANDIDATES' (e.g. '64:128') scores a Mult-VAE/DAE in two stages, a low-rank shortlist re-scored
    with the float32 output layer (see `genrec.serving.rerank`)."""
    import uvicorn

    from genrec.serving.app import create_app, tune_interpreter

    tune_interpreter(switch_interval_ms)
    app = create_app(model_dir, store=store, api_key=api_key, max_batch=max_batch, max_wait_ms=max_wait_ms,
                     max_body_bytes=max_body_bytes, imports=imports, torch_threads=torch_threads,
                     scoring_process=scoring_process, quantize=quantize, rerank=rerank)
    uvicorn.run(app, host=host, port=port, access_log=access_log, log_level=log_level)


def retrain(model_dir: str | Path, store: str | Path | EventStore, out_dir: str | Path,
            imports: Sequence[str] = ()) -> RetrainReport:
    """Refit the model in `model_dir` on its training histories plus the events recorded in `store` since,
    and write the new bundle to `out_dir` (swap it in with POST /v1/admin/reload). imports: modules that
    register models which are not built in."""
    for module in imports:
        importlib.import_module(module)
    opened = open_store(store)
    try:
        return _retrain(model_dir, opened, out_dir)
    finally:
        if opened is not store:
            opened.close()


def describe(report: RetrainReport) -> str:
    """A few lines for the terminal."""
    lines = [f"wrote {report.path} ({report.model}): {report.n_users} users, {report.new_users} new",
             f"folded in {report.events_used} events (through seq {report.events_through_seq})"]
    if report.events_skipped:
        shown = ", ".join(report.skipped_items)
        lines.append(f"skipped {report.events_skipped} events for items the model does not know (kept in the "
                     f"store): {shown}")
    return "\n".join(lines)
