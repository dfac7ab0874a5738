"""Prometheus metrics for the service: requests, latency, errors and model time, per app instance.

Each app gets its own registry, so several apps in one process (tests) never share counters. With
`--workers N` every worker process keeps its own figures and /metrics shows the worker that answered.
"""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Latency buckets in seconds: the service aims at tens of milliseconds per photo.
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("housenum_http_requests", "HTTP requests answered.",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("housenum_http_request_seconds", "Time from request to the end of the response.",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.errors = Counter("housenum_http_errors", "Error responses by code (the JSON error.code).",
                              ["route", "code"], registry=self.registry)
        self.images = Counter("housenum_images", "Images run through a model.", ["model"], registry=self.registry)
        self.inference = Histogram("housenum_inference_seconds",
                                   "Server time of requests that ran a model (upload, decode, model).",
                                   ["model"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("housenum_batch_size", "Single-image requests run together in one model call.",
                                    ["model"], buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Counts every HTTP request by its route template (not the raw path, which would explode labels).

    The request is matched against `routes`, the app's route list, before the app runs: a mount
    rewrites the scope's paths, and Starlette's own routes (/openapi.json, /static) leave no route
    in the scope. A request with the wrong method counts under its route."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: list[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    def route_label(self, scope: Scope) -> str:
        matches = [(route.matches(scope)[0], route.path) for route in self.routes]
        for wanted in (Match.FULL, Match.PARTIAL):
            for match, path in matches:
                if match is wanted:
                    return path
        return "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        label = self.route_label(scope)

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            self.metrics.requests.labels(scope["method"], label, str(status)).inc()
            self.metrics.latency.labels(label).observe(time.perf_counter() - start)
            code = scope.get("state", {}).get("error_code")
            if code:
                self.metrics.errors.labels(label, code).inc()
