"""Prometheus metrics of the server, kept with ``prometheus_client``.

With one worker the numbers live in this process. With ``--workers N`` ``crossrank serve`` points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before the workers start (as vLLM does), every
worker writes its numbers there, and a scrape reaching any worker reports the sum over all of
them: counters and histograms of every worker that ever ran (a replaced worker's counts stay),
gauges of the live ones. Updates come from the event loop and the engine thread;
``prometheus_client`` takes its own locks.
"""
from __future__ import annotations

import os
from typing import Dict, Tuple

__all__ = ["Metrics", "LATENCY_BUCKETS", "BATCH_BUCKETS", "MULTIPROC_ENV", "mark_process_dead"]

#: The environment variable naming the directory shared by the workers' metrics.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: Request latency buckets, seconds.
LATENCY_BUCKETS: Tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                                      60.0, 120.0, 300.0)
#: Pairs per forward pass.
BATCH_BUCKETS: Tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

_COUNTERS: Tuple[Tuple[str, str], ...] = (
    ("pairs", "Pairs scored."),
    ("prompt_tokens", "Prompt tokens of the scored pairs (what usage.prompt_tokens counts)."),
    ("computed_tokens", "Tokens run through the model (prompt tokens minus reused prefixes)."),
    ("prefix_tokens_reused", "Prompt tokens whose K/V came from a shared query prefix."),
    ("forward_passes", "Forward passes of the engine."),
    ("timeouts", "Requests that hit the request timeout."),
    ("queue_full", "Requests refused with 503 because the engine queue was full."),
    ("overloaded", "Requests refused at the door (429/503): every admission permit was taken."),
    ("client_disconnects", "Requests whose client went away before the answer (status 499)."),
)
_GAUGES: Tuple[Tuple[str, str], ...] = (
    ("queue_depth", "Requests waiting for the engine."),
    ("requests_in_flight", "Scoring requests being handled."),
    ("engine_busy", "1 while the engine runs a forward pass, else 0 (summed over the workers)."),
)


def mark_process_dead(pid: int) -> None:
    """Drops the gauges of a dead worker from the shared directory (its counters stay)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


class Metrics:
    """The counters, gauges and histograms ``GET /metrics`` reports.

    Args:
        model_name: The ``model`` label of every series.
    """

    def __init__(self, model_name: str) -> None:
        # Imported here: prometheus_client picks its storage (in memory or the shared directory)
        # from the environment when first imported, which run() sets before the workers start.
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

        disable_created_metrics()
        self.model_name = model_name
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        self.registry = CollectorRegistry()
        reg = self.registry
        self._requests = Counter("crossrank_requests", "HTTP requests by endpoint and status code.",
                                 ["model", "endpoint", "status"], registry=reg)
        self._latency = Histogram("crossrank_request_duration_seconds", "Time from request to response.",
                                  ["model", "endpoint"], buckets=LATENCY_BUCKETS, registry=reg)
        self._counters: Dict[str, "Counter"] = {
            name: Counter(f"crossrank_{name}", text, ["model"], registry=reg).labels(model_name)
            for name, text in _COUNTERS}
        self._batch = Histogram("crossrank_batch_pairs", "Pairs packed into one forward pass.", ["model"],
                                buckets=BATCH_BUCKETS, registry=reg).labels(model_name)
        self._gauges: Dict[str, "Gauge"] = {
            name: Gauge(f"crossrank_{name}", text, ["model"], registry=reg,
                        multiprocess_mode="livesum").labels(model_name)
            for name, text in _GAUGES}

    # -- updates -------------------------------------------------------------------------------

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        """One finished HTTP request."""
        self._requests.labels(self.model_name, endpoint, str(status)).inc()
        self._latency.labels(self.model_name, endpoint).observe(seconds)

    def add(self, name: str, value: float = 1) -> None:
        """Adds to a counter (``pairs``, ``prompt_tokens``, ``timeouts``, ...)."""
        self._counters[name].inc(value)

    def set_gauge(self, name: str, value: float) -> None:
        """Sets a gauge (``queue_depth``, ``requests_in_flight``, ``engine_busy``)."""
        self._gauges[name].set(value)

    def add_gauge(self, name: str, delta: float) -> None:
        """Moves a gauge by ``delta``."""
        self._gauges[name].inc(delta)

    def observe_pass(self, pairs: int, tokens: int) -> None:
        """One forward pass of the engine: pairs packed into it and tokens computed."""
        self._batch.observe(pairs)
        self._counters["forward_passes"].inc()
        self._counters["computed_tokens"].inc(tokens)

    # -- exposition ----------------------------------------------------------------------------

    def render(self) -> str:
        """The metrics in Prometheus' text format (version 0.0.4): this process's, or with several
        workers the sum over every worker's."""
        from prometheus_client import CollectorRegistry, generate_latest

        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry).decode("utf-8")
        return generate_latest(self.registry).decode("utf-8")
