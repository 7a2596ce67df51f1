"""Prometheus metrics of one server process, written in the text exposition format by hand.

Counters and histograms are updated from the event loop and from the engine thread, so every
update takes one lock. With ``--workers N`` each process keeps its own numbers; a scrape reaches
whichever worker accepts the connection.
"""
from __future__ import annotations

import bisect
import math
import threading
from typing import Dict, List, Sequence, Tuple

__all__ = ["Metrics", "LATENCY_BUCKETS", "BATCH_BUCKETS"]

#: Request latency buckets, seconds.
LATENCY_BUCKETS: Tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                                      60.0, 120.0, 300.0)
#: Pairs per forward pass.
BATCH_BUCKETS: Tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

Labels = Tuple[Tuple[str, str], ...]


class _Histogram:
    """Cumulative-bucket histogram (Prometheus semantics: ``le`` buckets, sum, count)."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.bounds = tuple(buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # the last slot is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value


def _fmt_labels(labels: Labels, extra: Tuple[Tuple[str, str], ...] = ()) -> str:
    items = tuple(labels) + extra
    if not items:
        return ""
    escaped = (f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"' for k, v in items)
    return "{" + ",".join(escaped) + "}"


def _fmt_value(v: float) -> str:
    if math.isinf(v):
        return "+Inf"
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


class Metrics:
    """The counters, gauges and histograms ``GET /metrics`` reports."""

    def __init__(self, model_name: str) -> None:
        self._lock = threading.Lock()
        self.model_name = model_name
        self._requests: Dict[Labels, int] = {}
        self._latency: Dict[Labels, _Histogram] = {}
        self._counters: Dict[str, float] = {
            "pairs": 0, "prompt_tokens": 0, "computed_tokens": 0, "prefix_tokens_reused": 0,
            "forward_passes": 0, "timeouts": 0, "queue_full": 0, "overloaded": 0, "client_disconnects": 0,
        }
        self._batch = _Histogram(BATCH_BUCKETS)
        self._gauges: Dict[str, float] = {"queue_depth": 0, "requests_in_flight": 0, "engine_busy": 0}

    # -- updates -------------------------------------------------------------------------------

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        """One finished HTTP request."""
        key: Labels = (("endpoint", endpoint), ("status", str(status)))
        with self._lock:
            self._requests[key] = self._requests.get(key, 0) + 1
            hist = self._latency.get((("endpoint", endpoint),))
            if hist is None:
                hist = self._latency[(("endpoint", endpoint),)] = _Histogram(LATENCY_BUCKETS)
            hist.observe(seconds)

    def add(self, name: str, value: float = 1) -> None:
        """Adds to a counter (``pairs``, ``prompt_tokens``, ``timeouts``, ...)."""
        with self._lock:
            self._counters[name] += value

    def set_gauge(self, name: str, value: float) -> None:
        """Sets a gauge (``queue_depth``, ``requests_in_flight``, ``engine_busy``)."""
        with self._lock:
            self._gauges[name] = value

    def add_gauge(self, name: str, delta: float) -> None:
        """Moves a gauge by ``delta``."""
        with self._lock:
            self._gauges[name] += delta

    def observe_pass(self, pairs: int, tokens: int) -> None:
        """One forward pass of the engine: pairs packed into it and tokens computed."""
        with self._lock:
            self._batch.observe(pairs)
            self._counters["forward_passes"] += 1
            self._counters["computed_tokens"] += tokens

    # -- exposition ----------------------------------------------------------------------------

    def render(self) -> str:
        """The metrics in Prometheus' text format (version 0.0.4)."""
        model = (("model", self.model_name),)
        out: List[str] = []

        def header(name: str, kind: str, text: str) -> None:
            out.append(f"# HELP {name} {text}")
            out.append(f"# TYPE {name} {kind}")

        def histogram(name: str, labels: Labels, hist: _Histogram) -> None:
            cumulative = 0
            for bound, count in zip(hist.bounds + (math.inf,), hist.counts):
                cumulative += count
                out.append(f"{name}_bucket{_fmt_labels(labels, (('le', _fmt_value(bound)),))} {cumulative}")
            out.append(f"{name}_sum{_fmt_labels(labels)} {_fmt_value(hist.total)}")
            out.append(f"{name}_count{_fmt_labels(labels)} {cumulative}")

        with self._lock:
            header("crossrank_requests_total", "counter", "HTTP requests by endpoint and status code.")
            for labels, n in sorted(self._requests.items()):
                out.append(f"crossrank_requests_total{_fmt_labels(model + labels)} {n}")
            header("crossrank_request_duration_seconds", "histogram", "Time from request to response.")
            for labels, hist in sorted(self._latency.items()):
                histogram("crossrank_request_duration_seconds", model + labels, hist)
            simple = (
                ("pairs", "Pairs scored."),
                ("prompt_tokens", "Prompt tokens of the scored pairs (what usage.prompt_tokens counts)."),
                ("computed_tokens", "Tokens run through the model (prompt tokens minus reused prefixes)."),
                ("prefix_tokens_reused", "Prompt tokens whose K/V came from a shared query prefix."),
                ("forward_passes", "Forward passes of the engine."),
                ("timeouts", "Requests that hit the request timeout."),
                ("queue_full", "Requests refused with 503 because the queue was full."),
                ("overloaded", "Requests refused at the door (429/503): every admission permit was taken."),
                ("client_disconnects", "Requests whose client went away before the answer (status 499)."),
            )
            for name, text in simple:
                header(f"crossrank_{name}_total", "counter", text)
                out.append(f"crossrank_{name}_total{_fmt_labels(model)} {_fmt_value(self._counters[name])}")
            header("crossrank_batch_pairs", "histogram", "Pairs packed into one forward pass.")
            histogram("crossrank_batch_pairs", model, self._batch)
            header("crossrank_queue_depth", "gauge", "Requests waiting for the engine.")
            out.append(f"crossrank_queue_depth{_fmt_labels(model)} {_fmt_value(self._gauges['queue_depth'])}")
            header("crossrank_requests_in_flight", "gauge", "Scoring requests being handled.")
            out.append(f"crossrank_requests_in_flight{_fmt_labels(model)} "
                       f"{_fmt_value(self._gauges['requests_in_flight'])}")
            header("crossrank_engine_busy", "gauge", "1 while the engine runs a round of forward passes, else 0.")
            out.append(f"crossrank_engine_busy{_fmt_labels(model)} {_fmt_value(self._gauges['engine_busy'])}")
        return "\n".join(out) + "\n"
