"""Prometheus metrics of one server: per-version requests, latency, errors, tokens, batches, cache, swaps."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ServeMetrics:
    """Its own CollectorRegistry, so two servers in one process (tests) do not share counters."""

    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("ftops_requests", "requests answered, by model version, route, endpoint and status",
                                ["version", "route", "endpoint", "status"], registry=r)
        self.latency = Histogram("ftops_request_seconds", "request latency to the last byte",
                                 ["version", "endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.errors = Counter("ftops_request_errors", "requests that failed on the server side (5xx)",
                              ["version", "endpoint"], registry=r)
        self.rejected = Counter("ftops_rejected", "requests refused before a model saw them", ["reason"], registry=r)
        self.prompt_tokens = Counter("ftops_prompt_tokens", "prompt tokens", ["version"], registry=r)
        self.completion_tokens = Counter("ftops_completion_tokens", "generated tokens", ["version"], registry=r)
        self.batch_size = Histogram("ftops_batch_size", "requests per generate call", ["version"],
                                    buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)
        self.cache_hits = Counter("ftops_cache_hits", "greedy requests answered from the exact-repeat cache",
                                  ["version"], registry=r)
        self.cache_misses = Counter("ftops_cache_misses", "greedy requests the cache did not hold", ["version"],
                                    registry=r)
        self.swaps = Counter("ftops_model_swaps", "times a route switched to another model version", ["route"],
                             registry=r)
        self.serving = Gauge("ftops_serving", "1 for the version each route serves now", ["route", "version"],
                             registry=r)

    def engine_event(self, version: str, name: str, value: float = 1) -> None:
        if name == "batch":
            self.batch_size.labels(version).observe(value)
        elif name == "cache_hits":
            self.cache_hits.labels(version).inc(value)
        elif name == "cache_misses":
            self.cache_misses.labels(version).inc(value)

    def swapped(self, route: str, old: str | None, new: str) -> None:
        if old:
            self.serving.labels(route, old).set(0)
            self.swaps.labels(route).inc()
        self.serving.labels(route, new).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)
