"""A lean path for the request the service exists for: POST /v1/recommendations without filters or explanations.

FastAPI's stack costs CPU on every request: a dozen middleware layers each wrapping `receive` and `send`, the
body parsed into a dict and validated by pydantic, the response validated again against its `response_model`
and serialised. On 2 shared cores that was 0.3-0.7 ms per request more for the server process than this path
(benchmarks/results/serving.md), time the scoring process could have had. `RecommendationFastPath` answers the
plain cases without any of that: it reads the body (within the
size limit), parses it with `json.loads` as FastAPI does, and checks it against the same rules as
`schemas.RecommendationRequest`, conservatively: a body it is not sure about, every invalid one included, goes
on to FastAPI unchanged (the body it read is replayed), so validation errors, filters, explanations and
everything else keep their one implementation and their exact responses. What it does answer is answered by the
same `Service.recommend`, serialised by the response model's own pydantic serialiser (the bytes FastAPI sends),
and counted in the same metrics. `GenrecAPI` is the FastAPI app with this path in front of its stack.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI

from genrec.serving import schemas as s

ASGIApp = Callable[[dict, Callable, Callable], Awaitable[None]]
PATH = "/v1/recommendations"
_FIELDS = frozenset(s.RecommendationRequest.model_fields)
_TEXT = re.compile(r"[^\x00-\x1f\x7f]{1,256}")  # schemas.Text: 1..256 characters, no control characters
_SURROGATE = re.compile("[\ud800-\udfff]")
_INT64 = 2**63


def _plain_id(x) -> bool:
    """An id `schemas.Id` accepts as it is: an int (not a bool, within int64 here) or a valid Text."""
    kind = type(x)
    if kind is int:
        return -_INT64 <= x < _INT64
    if kind is str:
        return _TEXT.fullmatch(x) is not None and (x.isascii() or _SURROGATE.search(x) is None)
    return False


def plain_request(body: bytes) -> s.RecommendationRequest | None:
    """The request, when `body` is JSON that `RecommendationRequest` accepts without converting anything, with
    no filters and no explanations; None for anything else (FastAPI then validates it and answers)."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if type(data) is not dict or not data.keys() <= _FIELDS:
        return None
    user_id, history = data.get("user_id"), data.get("history")
    k, exclude_seen = data.get("k", 10), data.get("exclude_seen", True)
    if data.get("filters") is not None or data.get("explain", False) is not False:
        return None
    if type(k) is not int or not 1 <= k <= s.MAX_K or type(exclude_seen) is not bool:
        return None
    if user_id is not None and not _plain_id(user_id):
        return None
    if history is not None and (type(history) is not list or len(history) > s.MAX_HISTORY
                                or not all(map(_plain_id, history))):
        return None
    return s.RecommendationRequest.model_construct(user_id=user_id, history=history, k=k,
                                                   exclude_seen=exclude_seen, filters=None, explain=False)


def _json_content_type(headers: list[tuple[bytes, bytes]]) -> tuple[bool, int | None]:
    """(is the body declared application/json?, its declared length or None)."""
    is_json, length = False, None
    for name, value in headers:
        if name == b"content-type":
            is_json = value.split(b";", 1)[0].strip().lower() == b"application/json"
        elif name == b"content-length":
            length = int(value) if value.isdigit() else -1
    return is_json, length


def _replay(messages: list[dict], receive: Callable) -> Callable:
    """A `receive` that gives the messages already read first, then the connection's own."""
    pending = list(messages)

    async def replayed() -> dict:
        return pending.pop(0) if pending else await receive()

    return replayed


class RecommendationFastPath:
    """`await fast(scope, receive, send, fallback)` for a request that `matches`: answers it, or hands it to
    `fallback` (the FastAPI app) with its body replayed. `service` is the app's `Service`."""

    def __init__(self, service, max_body_bytes: int):
        self.service, self.max_body_bytes = service, max_body_bytes

    @staticmethod
    def matches(scope: dict) -> bool:
        return (scope["type"] == "http" and scope["path"] == PATH and scope["method"] == "POST"
                and not scope.get("root_path"))

    async def _read(self, scope: dict, receive: Callable) -> tuple[list[dict], bytes | None]:
        """(messages read, body); body None when the request should go the long way (not declared JSON, over
        the size limit, or the client went away)."""
        is_json, length = _json_content_type(scope["headers"])
        if not is_json or length is None or not 0 < length <= self.max_body_bytes:
            return [], None
        messages, chunks, size = [], [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages, None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return messages, None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return messages, b"".join(chunks)

    async def __call__(self, scope: dict, receive: Callable, send: Callable, fallback: ASGIApp) -> None:
        start = time.perf_counter()
        messages, body = await self._read(scope, receive)
        request = plain_request(body) if body is not None else None
        if request is None:
            return await fallback(scope, _replay(messages, receive), send)
        status = 500
        try:
            try:
                response = await self.service.recommend(request)
            except s.ApiError as e:  # as the app's handler: Starlette's JSONResponse of {"message": ...}
                status, payload = e.status, json.dumps({"message": e.message}, ensure_ascii=False,
                                                       separators=(",", ":")).encode()
            else:
                status, payload = 200, response.__pydantic_serializer__.to_json(response)
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-length", str(len(payload)).encode()),
                                    (b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": payload})
        except Exception:
            if status == 500:  # nothing was sent: answer as Starlette's ServerErrorMiddleware, then let it out
                await send({"type": "http.response.start", "status": 500,
                            "headers": [(b"content-length", b"21"), (b"content-type", b"text/plain; charset=utf-8")]})
                await send({"type": "http.response.body", "body": b"Internal Server Error"})
            raise
        finally:
            self.service.metrics.observe_request(PATH, "POST", status, time.perf_counter() - start)


class GenrecAPI(FastAPI):
    """FastAPI, with plain POST /v1/recommendations answered by `fast_path` ahead of the framework's stack; the
    route, its validation and its OpenAPI entry stay FastAPI's."""

    fast_path: RecommendationFastPath | None = None

    async def __call__(self, scope, receive, send) -> None:
        if self.fast_path is not None and self.fast_path.matches(scope):
            await self.fast_path(scope, receive, send, super().__call__)
        else:
            await super().__call__(scope, receive, send)
