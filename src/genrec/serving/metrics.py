"""Prometheus metrics for the service, rendered in the text exposition format (version 0.0.4), and the ASGI
middleware that counts and times every request.

A few counters, gauges and histograms with labels are all the service needs, so they are written here in a
page of code rather than pulled in as a dependency. Every metric is safe to update from the event loop and
from the scoring thread at once (one lock per metric).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable, Sequence

#: request latency buckets in seconds: fine below 25 ms, where the service's targets are
LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: scoring batch sizes (users per model.score call)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


def _labels(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    escaped = (str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"') for v in values)
    return "{" + ",".join(f'{n}="{v}"' for n, v in zip(names, escaped)) + "}"


def _number(x: float) -> str:
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(float(x)) if not float(x).is_integer() else str(int(x))


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help: str, labels: Sequence[str] = ()):
        self.name, self.help, self.label_names = name, help, tuple(labels)
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, str]) -> tuple[str, ...]:
        if set(labels) != set(self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}, got {tuple(labels)}")
        return tuple(str(labels[n]) for n in self.label_names)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help: str, labels: Sequence[str] = ()):
        super().__init__(name, help, labels)
        self._values: dict[tuple[str, ...], float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(self._key(labels), 0.0)

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return self.header() + [f"{self.name}{_labels(self.label_names, k)} {_number(v)}" for k, v in items]


class Gauge(Counter):
    kind = "gauge"

    def set(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help: str, buckets: Iterable[float], labels: Sequence[str] = ()):
        super().__init__(name, help, labels)
        self.buckets = tuple(sorted(buckets))
        self._series: dict[tuple[str, ...], list[float]] = {}  # bucket counts..., +Inf count, sum

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            series = self._series.setdefault(key, [0.0] * (len(self.buckets) + 2))
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    series[i] += 1
            series[-2] += 1
            series[-1] += value

    def count(self, **labels: str) -> int:
        series = self._series.get(self._key(labels))
        return 0 if series is None else int(series[-2])

    def render(self) -> list[str]:
        with self._lock:
            items = sorted((k, list(v)) for k, v in self._series.items())
        lines = self.header()
        for key, series in items:
            for bound, n in zip((*self.buckets, math.inf), series[:-1]):
                labels = _labels((*self.label_names, "le"), (*key, _number(bound)))
                lines.append(f"{self.name}_bucket{labels} {_number(n)}")
            lines.append(f"{self.name}_count{_labels(self.label_names, key)} {_number(series[-2])}")
            lines.append(f"{self.name}_sum{_labels(self.label_names, key)} {_number(series[-1])}")
        return lines


class ServiceMetrics:
    """The service's metrics, one registry per app."""

    content_type = "text/plain; version=0.0.4; charset=utf-8"

    def __init__(self):
        self.requests = Counter("genrec_http_requests_total", "HTTP requests by endpoint, method and status.",
                                ("endpoint", "method", "status"))
        self.latency = Histogram("genrec_http_request_duration_seconds", "HTTP request latency in seconds.",
                                 LATENCY_BUCKETS, ("endpoint",))
        self.batch_size = Histogram("genrec_scoring_batch_size", "Users scored per model.score call.",
                                    BATCH_BUCKETS)
        self.recommendations = Counter("genrec_recommendations_total", "Recommendation lists by strategy.",
                                       ("strategy",))
        self.unknown_items = Counter("genrec_unknown_history_items_total",
                                     "History item ids in requests that the model does not know (ignored).")
        self.events = Counter("genrec_events_written_total", "Events committed to the event store.")
        self.model_info = Gauge("genrec_model_info", "The model being served (value 1).",
                                ("model", "class", "path", "fingerprint"))
        self.reloads = Counter("genrec_model_reloads_total", "Successful hot swaps of the model.")

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        self.requests.inc(endpoint=endpoint, method=method, status=str(status))
        self.latency.observe(seconds, endpoint=endpoint)

    def render(self) -> str:
        metrics = (self.requests, self.latency, self.batch_size, self.recommendations, self.unknown_items,
                   self.events, self.model_info, self.reloads)
        return "\n".join(line for m in metrics for line in m.render()) + "\n"


class Instrumentation:
    """ASGI middleware: counts requests by endpoint (the route's path template, so ids do not multiply the
    series), method and status, and observes their latency."""

    def __init__(self, app, metrics: ServiceMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500

        async def send_and_note(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_request(endpoint, scope["method"], status, time.perf_counter() - start)
