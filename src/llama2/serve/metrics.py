"""Prometheus metrics for `GET /metrics`: requests, tokens, latency and time-to-first-token
histograms, and each local model's queue depth and running requests, all per model.

Each app has its own registry, so tests and several apps in one process never share counters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _SchedulerGauges(Collector):
    """Read at scrape time: (model -> (waiting, running)) for models that queue locally."""

    def __init__(self, read: Callable[[], dict[str, tuple[int, int]]]) -> None:
        self.read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        waiting = GaugeMetricFamily("llama2_queue_depth", "Requests waiting for a decode row", labels=["model"])
        running = GaugeMetricFamily("llama2_running_requests", "Requests decoding now", labels=["model"])
        for model, (queued, active) in self.read().items():
            waiting.add_metric([model], queued)
            running.add_metric([model], active)
        yield waiting
        yield running


class Metrics:
    def __init__(self, scheduler_state: Callable[[], dict[str, tuple[int, int]]]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "llama2_requests", "API requests by model, endpoint and HTTP status",
            ["model", "endpoint", "status"], registry=self.registry,
        )
        self.tokens = Counter(
            "llama2_tokens", "Tokens processed, by model and kind (prompt or completion)",
            ["model", "kind"], registry=self.registry,
        )
        self.latency = Histogram(
            "llama2_request_duration_seconds", "Time from request to last byte",
            ["model", "endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.first_token = Histogram(
            "llama2_time_to_first_token_seconds", "Time from request to the first streamed token",
            ["model"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.registry.register(_SchedulerGauges(scheduler_state))

    def observe(self, model: str, endpoint: str, status: int, seconds: float, prompt: int, completion: int) -> None:
        self.requests.labels(model, endpoint, str(status)).inc()
        self.latency.labels(model, endpoint).observe(seconds)
        if prompt:
            self.tokens.labels(model, "prompt").inc(prompt)
        if completion:
            self.tokens.labels(model, "completion").inc(completion)

    def render(self) -> bytes:
        return generate_latest(self.registry)
