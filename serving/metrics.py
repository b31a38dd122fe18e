"""Prometheus metrics of one replica, served at /metrics.

A registry per replica (not the process default, which vLLM also writes to); with several replicas,
each scrape reaches one of them, so label `replica` tells them apart and Prometheus sums them.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self, replica: str, queue_depth: Callable[[], int], engine_ready: Callable[[], bool]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r, labels = self.registry, {"replica": replica}
        self.requests = Counter("xalign_requests", "HTTP requests by route and status", ["route", "status"],
                                registry=r)
        self.latency = Histogram("xalign_request_latency_seconds", "Request latency by route", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("xalign_time_to_first_token_seconds", "Streaming: time to the first token",
                              ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("xalign_tokens", "Tokens processed", ["kind", "model"], registry=r)
        self.translations = Counter("xalign_translations", "Translated items by target language", ["target"],
                                    registry=r)
        self.off_target = Counter("xalign_off_target", "Off-target translations, before and after the guard",
                                  ["stage", "target"], registry=r)
        self.guard_retries = Counter("xalign_guard_retries", "Guard retries by outcome", ["outcome"], registry=r)
        self.in_flight = Gauge("xalign_requests_in_flight", "Requests being handled", registry=r)
        queue = Gauge("xalign_queue_depth", "Requests waiting or running in the engine", list(labels), registry=r)
        queue.labels(**labels).set_function(lambda: float(queue_depth()))
        ready = Gauge("xalign_engine_ready", "1 when the engine can serve", list(labels), registry=r)
        ready.labels(**labels).set_function(lambda: 1.0 if engine_ready() else 0.0)
        self.replica = replica

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route=route, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)

    def count_tokens(self, model: str, prompt: int, completion: int) -> None:
        self.tokens.labels(kind="prompt", model=model).inc(prompt)
        self.tokens.labels(kind="completion", model=model).inc(completion)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
