"""Prometheus metrics of `zoo serve` (``GET /metrics``), read from the batchers when scraped.

A registry of its own per app, so that several servers in one process (tests) never share one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from zoo.serving.batcher import Batcher


class _Batchers(Collector):
    def __init__(self, batchers: Mapping[str, Batcher], outcomes: Mapping[tuple[str, str], int]) -> None:
        self.batchers, self.outcomes = batchers, outcomes

    def collect(self) -> Iterator[Metric]:
        gauges = {
            "zoo_serve_queue_depth": ("requests waiting to join the batch", lambda b: b.queue_depth),
            "zoo_serve_batch_size": ("requests in the running decode batch", lambda b: b.batch_size),
            "zoo_serve_tokens_per_second": ("tokens drawn per second over the last 10 s", Batcher.tokens_per_second),
        }
        for name, (doc, read) in gauges.items():
            gauge = GaugeMetricFamily(name, doc, labels=["model"])
            for model, batcher in self.batchers.items():
                gauge.add_metric([model], float(read(batcher)))
            yield gauge
        tokens = CounterMetricFamily("zoo_serve_tokens", "tokens drawn", labels=["model"])
        admitted = CounterMetricFamily("zoo_serve_admitted", "requests that joined a batch", labels=["model"])
        for model, batcher in self.batchers.items():
            tokens.add_metric([model], batcher.tokens_total)
            admitted.add_metric([model], batcher.requests_total)
        outcomes = CounterMetricFamily(
            "zoo_serve_requests", "answered requests by outcome", labels=["model", "outcome"]
        )
        for (model, outcome), count in sorted(self.outcomes.items()):
            outcomes.add_metric([model, outcome], count)
        yield from (tokens, admitted, outcomes)


def render(batchers: Mapping[str, Batcher], outcomes: Mapping[tuple[str, str], int]) -> tuple[bytes, str]:
    """The text exposition format and its content type."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Batchers(batchers, outcomes))
    return generate_latest(registry), CONTENT_TYPE_LATEST
