"""The HTTP service: recommendations for known and new users, similar items, an event log, hot model swaps.

`create_app(model_dir, store=..., api_key=...)` returns a FastAPI app:

    POST   /v1/recommendations         top-k for a user id and/or a raw history (fold-in); filters, explanations
    GET    /v1/items/{item_id}/similar  items scored from the one-item history [item], the item left out
    POST   /v1/events                   append interactions (committed before the 2xx)
    POST   /v1/admin/reload             load a bundle (sha256 checked) and swap it in (X-API-Key)
    DELETE /v1/admin/users/{user_id}    delete a user's stored events (X-API-Key)
    GET    /health, /metrics (Prometheus text), /docs, /openapi.json

Which history a recommendation uses (the response's `strategy`): a user the bundle or the event log knows
gets their training history plus their events since (`known_user`), with any request `history` added; an
unknown user with a history is folded in (`fold_in`); with no usable history at all, the most popular items
(`popularity_fallback`). History ids the model does not know are ignored and counted in the response; a
history whose ids are all unknown is a 422, since nothing in it could be used.

Model swaps are atomic: a request reads the current model once and is scored by it to the end, so requests
in flight during a reload finish on the old model and later ones use the new one.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import os
import secrets
import sys
from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Query, Request, Security
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import APIKeyHeader
from starlette.exceptions import HTTPException as StarletteHTTPException

from genrec.serving import schemas as s
from genrec.serving.batcher import MicroBatcher
from genrec.serving.explanations import UNAVAILABLE, explain_items, explainer
from genrec.serving.fastpath import GenrecAPI, RecommendationFastPath
from genrec.serving.metrics import Instrumentation, ServiceMetrics
from genrec.serving.overlay import Overlay
from genrec.serving.rerank import TwoStageScorer, parse_rerank
from genrec.serving.schemas import ApiError
from genrec.serving.scorer import ProcessScorer
from genrec.serving.served import FilterError, ScoringRow, ServedModel
from genrec.serving.store import Event, EventStore, open_store


@dataclass(eq=False)
class Active:
    """The model being served and what scores for it (itself, its two-stage scorer, or its child process);
    `in_flight` counts the requests using it, so that a swapped-out model is closed only when they are done."""

    served: ServedModel
    scorer: ProcessScorer | TwoStageScorer | None = None
    in_flight: int = 0

    @property
    def score_rows(self):
        """What the batcher calls: a child process is awaited from the event loop, others run on its thread."""
        if isinstance(self.scorer, ProcessScorer):
            return self.scorer.score_rows_async
        return self.scorer.score_rows if self.scorer is not None else self.served.score_rows

    async def close(self) -> None:
        if isinstance(self.scorer, ProcessScorer):
            await self.scorer.wait_idle()
        if self.scorer is not None:
            await run_in_threadpool(self.scorer.close)


class Service:
    """What the routes share: the current model, the event store and its in-memory overlay, the batcher."""

    def __init__(self, model_dir: str | Path, store: str | Path | EventStore, api_key: str | None,
                 max_batch: int, max_wait_ms: float, verify: bool, scoring_process: bool | int,
                 imports: Sequence[str], torch_threads: int | None, quantize: str | None = None,
                 rerank: str | None = None):
        self.model_dir, self.verify, self.api_key, self.quantize = Path(model_dir), verify, api_key, quantize
        self.rerank = parse_rerank(rerank)
        if self.rerank and quantize not in (None, "", "none"):
            raise ValueError("rerank re-scores with the float32 weights: use it without quantize")
        if int(scoring_process) < 0:
            raise ValueError(f"scoring_process must be a number of processes >= 0, got {scoring_process}")
        self.scoring_process = int(scoring_process)  # child processes; 0: score on the batcher's thread
        self.imports, self.torch_threads = list(imports), torch_threads
        self.active = self._load(self.model_dir)
        self._retiring: set[asyncio.Task] = set()
        self.owns_store = not isinstance(store, EventStore)
        self.store = open_store(store)
        self.overlay = Overlay()
        self.overlay.reset(self.store.events_since(self.current.watermark))
        self.metrics = ServiceMetrics()
        self._set_model_info()
        self.batcher = MicroBatcher(max_batch, max_wait_ms / 1000.0, on_batch=self.metrics.batch_size.observe,
                                    concurrency=self.scoring_process or 1)
        self.write_lock = asyncio.Lock()  # event appends, deletions and overlay rebuilds, one at a time

    @property
    def current(self) -> ServedModel:
        return self.active.served

    def _load(self, path: Path) -> Active:
        served = ServedModel.load(path, verify=self.verify, quantize=self.quantize)
        if self.scoring_process:
            return Active(served, ProcessScorer(path, self.verify, self.imports, self.torch_threads,
                                                quantize=self.quantize, rerank=self.rerank,
                                                processes=self.scoring_process))
        return Active(served, TwoStageScorer(served, *self.rerank) if self.rerank else None)

    async def _retire(self, old: Active, timeout_s: float = 60.0) -> None:
        """Close a swapped-out model's scoring process once the requests that were using it are done."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while old.in_flight and loop.time() < deadline:
            await asyncio.sleep(0.05)
        await old.close()

    def _set_model_info(self) -> None:
        info = self.current.info()
        self.metrics.model_info.clear()
        self.metrics.model_info.set(1, model=info["model"], **{"class": info["class"]}, path=info["path"],
                                    fingerprint=info["fingerprint"])

    # recommendations ----------------------------------------------------------------------------------------
    def _history(self, served: ServedModel, req: s.RecommendationRequest) -> tuple[np.ndarray, np.ndarray, bool, int]:
        """(items, values, known user?, unknown request ids) from the bundle, the overlay and the request."""
        items, values, known = [], [], False
        if req.user_id is not None:
            user = s.id_key(req.user_id)
            train = served.user_history(user)
            if train is not None:
                known = True
                items.append(train[0])
                values.append(train[1])
            recent, recent_values = self.overlay.user(user)
            if recent:
                known = True
                idx = served.item_index(recent)
                items.append(idx[idx >= 0])
                values.append(np.asarray(recent_values, np.float32)[idx >= 0])
        unknown = 0
        if req.history:
            idx = served.item_index([s.id_key(x) for x in req.history])
            unknown = int((idx < 0).sum())
            if unknown == len(idx):
                raise ApiError(422, f"history: none of its {len(idx)} item ids is known to the model")
            items.append(idx[idx >= 0])
            values.append(np.ones(len(idx) - unknown, np.float32))
        if not items:
            return np.zeros(0, np.int64), np.zeros(0, np.float32), known, unknown
        return np.concatenate(items).astype(np.int64), np.concatenate(values).astype(np.float32), known, unknown

    async def recommend(self, req: s.RecommendationRequest) -> s.RecommendationResponse:
        active = self.active  # read once: this request is served by this model to the end
        active.in_flight += 1
        try:
            return await self._recommend(active, req)
        finally:
            active.in_flight -= 1

    async def _recommend(self, active: Active, req: s.RecommendationRequest) -> s.RecommendationResponse:
        served = active.served
        try:
            allowed = served.candidate_mask(req.filters)
        except FilterError as e:
            raise ApiError(422, str(e)) from None
        items, values, known, unknown = self._history(served, req)
        if unknown:
            self.metrics.unknown_items.inc(unknown)
        if len(items) == 0:
            strategy = "popularity_fallback"
            top, scores = served.popular(req.k, allowed)
        else:
            strategy = "known_user" if known else "fold_in"
            row = ScoringRow(items, values, req.k, req.exclude_seen, allowed)
            top, scores = await self.batcher.submit(active.score_rows, row)
        self.metrics.recommendations.inc(strategy=strategy)
        # one validation of plain data in pydantic's core: cheaper than building the items one by one
        response = s.RecommendationResponse.model_validate({
            "strategy": strategy, "user_id": req.user_id, "history_length": len(items),
            "unknown_history_items": unknown, "model": served.name,
            "items": [{"item_id": i, "score": v} for i, v in zip(served.raw_items(top), scores.tolist())]})
        if req.explain:
            response.explanations = await self._explain(served, items, values, top, response.items, strategy)
        return response

    async def _explain(self, served, items, values, top, recommended, strategy) -> str | None:
        """Fill in explanations of the first MAX_EXPLAINED items; returns why they are missing, if they are."""
        explain = explainer()
        if explain is None:
            return UNAVAILABLE
        if strategy == "popularity_fallback":
            return "explanations are not available for popularity_fallback: there is no history to explain from"
        shown = top[: s.MAX_EXPLAINED]
        try:
            found = await run_in_threadpool(explain_items, explain, served, items, values, shown)
        except Exception as e:  # an explanation failing must not fail the recommendation
            return f"explanations failed: {type(e).__name__}: {e}"
        for item, explanation in zip(recommended, found):
            item.explanation = explanation
        return None if len(top) <= s.MAX_EXPLAINED else f"explanations cover the first {s.MAX_EXPLAINED} items"

    async def similar(self, item_id: str, k: int) -> s.SimilarItemsResponse:
        active = self.active
        served = active.served
        idx = served.item_index([item_id])
        if idx[0] < 0:
            raise ApiError(404, f"item_id: unknown item id {item_id!r}")
        row = ScoringRow(idx, np.ones(1, np.float32), k, True)
        active.in_flight += 1
        try:
            top, scores = await self.batcher.submit(active.score_rows, row)
        finally:
            active.in_flight -= 1
        raw = served.raw_items(idx)[0]
        items = [s.RecommendedItem(item_id=i, score=float(v)) for i, v in zip(served.raw_items(top), scores)]
        return s.SimilarItemsResponse(item_id=raw, items=items, model=served.name)

    # events and administration ----------------------------------------------------------------------------
    async def record(self, req: s.EventsRequest) -> s.EventsResponse:
        events = [Event(s.id_key(e.user_id), s.id_key(e.item_id), e.value, e.timestamp) for e in req.events]
        async with self.write_lock:
            written = await run_in_threadpool(self.store.append, events)
            self.overlay.add((e.user, e.item, e.value) for e in events)
        self.metrics.events.inc(written)
        unknown = int((self.current.item_index([e.item for e in events]) < 0).sum())
        return s.EventsResponse(written=written, unknown_items=unknown)

    async def reload(self, model_dir: str | None) -> s.ReloadResponse:
        path = Path(model_dir) if model_dir else self.model_dir
        try:
            new = await run_in_threadpool(self._load, path)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ApiError(422, f"model_dir: cannot load the bundle {str(path)!r}: {e}") from None
        async with self.write_lock:
            recent = await run_in_threadpool(self.store.events_since, new.served.watermark)
            self.overlay.reset(recent)
            old, self.active, self.model_dir = self.active, new, path
        task = asyncio.get_running_loop().create_task(self._retire(old))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        self._set_model_info()
        self.metrics.reloads.inc()
        return s.ReloadResponse(model=new.served.info(), overlay_users=len(self.overlay))

    async def delete_user(self, user_id: str) -> s.DeleteUserResponse:
        async with self.write_lock:
            deleted = await run_in_threadpool(self.store.delete_user, user_id)
            self.overlay.drop(user_id)
        return s.DeleteUserResponse(user_id=user_id, deleted_events=deleted)

    def check_admin(self, key: str | None) -> None:
        if not self.api_key:
            raise ApiError(403, "admin endpoints are disabled: start the server with an API key to enable them")
        if key is None or not secrets.compare_digest(key.encode(), self.api_key.encode()):
            raise ApiError(401, "X-API-Key: missing or wrong API key")

    async def aclose(self) -> None:
        await self.batcher.aclose()
        for task in list(self._retiring):
            await task
        await self.active.close()
        if self.owns_store:
            self.store.close()


def _validation_message(exc: RequestValidationError) -> JSONResponse:
    errors = []
    for err in exc.errors():
        loc = [str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path", "header")]
        errors.append({"field": ".".join(loc) or "body", "message": err.get("msg", "invalid")})
    first = errors[0] if errors else {"field": "body", "message": "invalid request"}
    return JSONResponse({"message": f"{first['field']}: {first['message']}", "errors": errors}, status_code=422)


def create_app(model_dir: str | Path, store: str | Path | EventStore = ":memory:", api_key: str | None = None,
               max_batch: int = 64, max_wait_ms: float = 0.0, max_body_bytes: int = 1_000_000,
               verify: bool = True, imports: Sequence[str] = (), torch_threads: int | None = None,
               scoring_process: bool | int = False, quantize: str | None = None, rerank: str | None = None,
               fast_path: bool = True) -> FastAPI:
    """The service for the bundle in `model_dir`. store: an EventStore or a spec for `open_store` (the
    default ':memory:' keeps nothing across restarts); api_key: enables the admin endpoints; imports: modules
    to import first (they register models that are not built in); torch_threads: torch.set_num_threads;
    scoring_process: score in a child process (see genrec.serving.scorer) instead of a thread, or in that many
    (an int > 1: batches are then scored in parallel, each process holding a copy of the model); quantize:
    'int8' serves an 8-bit copy of a Mult-VAE/DAE (see `genrec.serving.served.quantized`); rerank: 'RANK:CANDIDATES'
    (e.g. '64:128') scores a Mult-VAE/DAE in two stages, a low-rank shortlist re-ranked with the exact float32
    weights (see `genrec.serving.rerank`); max_wait_ms: how long a lone request waits for others to share its
    batch (0: none; requests arriving while a batch is scored form the next one anyway); fast_path: answer plain
    recommendation requests ahead of FastAPI's stack (`genrec.serving.fastpath`; same responses, less CPU)."""
    for module in imports:
        importlib.import_module(module)
    if torch_threads:
        import torch

        torch.set_num_threads(torch_threads)
    service = Service(model_dir, store, api_key, max_batch, max_wait_ms, verify, scoring_process, imports,
                      torch_threads, quantize, rerank)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # what exists now (the model, its id maps, the framework) lives as long as the server: keep it out of the
        # garbage collector's full collections, which otherwise pause every request in flight (~150 ms on Gowalla)
        gc.freeze()
        yield
        await service.aclose()

    app = GenrecAPI(title="genrec", version="1", lifespan=lifespan, max_body_size=max_body_bytes,
                  description="Recommendations, similar items and an event log for a genrec model bundle.")
    app.state.service = service
    app.fast_path = RecommendationFastPath(service, max_body_bytes) if fast_path else None
    app.add_middleware(Instrumentation, metrics=service.metrics)
    errors = {422: {"model": s.ErrorResponse}}
    admin_errors = {401: {"model": s.ErrorResponse}, 403: {"model": s.ErrorResponse}, **errors}
    api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the server's admin API key")

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"message": exc.message}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"message": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_message(exc)

    @app.post("/v1/recommendations", response_model=s.RecommendationResponse, responses=errors)
    async def recommendations(req: s.RecommendationRequest) -> s.RecommendationResponse:
        return await service.recommend(req)

    @app.get("/v1/items/{item_id}/similar", response_model=s.SimilarItemsResponse,
             responses={404: {"model": s.ErrorResponse}, **errors})
    async def similar_items(item_id: str = PathParam(max_length=256),
                            k: int = Query(10, ge=1, le=s.MAX_K)) -> s.SimilarItemsResponse:
        return await service.similar(item_id, k)

    @app.post("/v1/events", response_model=s.EventsResponse, responses=errors)
    async def events(req: s.EventsRequest) -> s.EventsResponse:
        return await service.record(req)

    @app.post("/v1/admin/reload", response_model=s.ReloadResponse, responses=admin_errors)
    async def reload(req: s.ReloadRequest | None = None,
                     key: str | None = Security(api_key_header)) -> s.ReloadResponse:
        service.check_admin(key)
        return await service.reload(req.model_dir if req else None)

    @app.delete("/v1/admin/users/{user_id}", response_model=s.DeleteUserResponse, responses=admin_errors)
    async def delete_user(user_id: str = PathParam(max_length=256),
                          key: str | None = Security(api_key_header)) -> s.DeleteUserResponse:
        service.check_admin(key)
        return await service.delete_user(user_id)

    @app.get("/health", response_model=s.Health)
    async def health() -> s.Health:
        rerank = "{}:{}".format(*service.rerank) if service.rerank else "none"
        return s.Health(status="ok", model={**service.current.info(), "rerank": rerank}, store=repr(service.store),
                        scoring="process" if service.scoring_process else "thread",
                        overlay_users=len(service.overlay))

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(service.metrics.render(), media_type=service.metrics.content_type)

    return app


def tune_interpreter(switch_interval_ms: float = 0.5) -> None:
    """Let the scoring thread get the GIL back sooner. Torch releases the GIL inside each operation and takes
    it back between them; with the default 5 ms switch interval a busy event loop makes it wait up to 5 ms
    each time, which multiplies a model's scoring time several-fold under load. Process-wide: call it from
    the process's entry point, not from library code."""
    sys.setswitchinterval(switch_interval_ms / 1000.0)


def _switch(name: str, default: str) -> int:
    """An environment switch or count: '', 0, false, no, off -> 0; true, yes, on -> 1; N -> N (any case)."""
    setting = os.environ.get(name, default).strip().lower()
    if setting in ("", "false", "no", "off"):
        return 0
    if setting in ("true", "yes", "on"):
        return 1
    if not setting.isdigit():
        raise ValueError(f"{name} must be 0, 1, a count or true/false, got {setting!r}")
    return int(setting)


def app_from_env() -> FastAPI:
    """For `uvicorn --factory genrec.serving.app:app_from_env`: GENREC_MODEL_DIR (required), GENREC_STORE,
    GENREC_API_KEY, GENREC_IMPORTS (comma-separated modules), GENREC_MAX_BATCH, GENREC_MAX_WAIT_MS (default 0),
    GENREC_TORCH_THREADS (default 1: more intra-op threads wait on cores the event loop is using; 0: torch's
    default), GENREC_SWITCH_INTERVAL_MS (see `tune_interpreter`), GENREC_SCORING_PROCESS (1: score in a child
    process; N: in N), GENREC_QUANTIZE (int8: serve 8-bit weights), GENREC_RERANK (RANK:CANDIDATES: two-stage scoring),
    GENREC_FAST_PATH (default 1; 0: every request through FastAPI's stack)."""
    env = os.environ
    tune_interpreter(float(env.get("GENREC_SWITCH_INTERVAL_MS", 0.5)))
    if not env.get("GENREC_MODEL_DIR"):
        raise RuntimeError("GENREC_MODEL_DIR must name a model bundle folder")
    imports = [m.strip() for m in env.get("GENREC_IMPORTS", "").split(",") if m.strip()]
    return create_app(env["GENREC_MODEL_DIR"], store=env.get("GENREC_STORE", ":memory:"),
                      api_key=env.get("GENREC_API_KEY") or None, max_batch=int(env.get("GENREC_MAX_BATCH", 64)),
                      max_wait_ms=float(env.get("GENREC_MAX_WAIT_MS", 0.0)), imports=imports,
                      torch_threads=int(env.get("GENREC_TORCH_THREADS", 1)) or None,
                      scoring_process=_switch("GENREC_SCORING_PROCESS", "0"),
                      quantize=env.get("GENREC_QUANTIZE") or None, rerank=env.get("GENREC_RERANK") or None,
                      fast_path=bool(_switch("GENREC_FAST_PATH", "1")))
