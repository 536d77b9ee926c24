"""Prometheus metrics of a running service (`metrics = "HOST:PORT"`, `--metrics`), served over
HTTP by prometheus-client in its own thread: counts read from the service at each scrape, and
histograms the loop fills (the work of each tick, how long input waited for the loop)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from streamrnn.addresses import host_port

TICK_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


class MetricsError(ValueError):
    """A metrics address that cannot be served; the message names it."""


@dataclass
class Snapshot:
    """What the service counts, as a scrape sees it."""

    frames: int
    events: int
    drops: int
    streams: int
    subscribers: int
    problems: dict[str, int]
    detections: dict[tuple[str, str], int]  # (model, label) -> detections
    load_seconds: dict[str, float]  # model -> seconds its file took to load
    gated_frames: dict[str, int]  # model -> frames its gate did not run (streamrnn.runtime.Gate)
    checked_frames: dict[str, int]  # model -> frames its check looked at (streamrnn.contract.Check)


def parse_address(address: str) -> tuple[str, int]:
    """HOST:PORT -> (host, port); raises MetricsError naming the address."""
    try:
        return host_port(address, "metrics", "127.0.0.1:9464")
    except ValueError as exc:
        raise MetricsError(str(exc)) from None


class Metrics:
    def __init__(self, address: str, snapshot: Callable[[], Snapshot]):
        try:
            from prometheus_client import CollectorRegistry, Histogram, start_http_server
            from prometheus_client.process_collector import ProcessCollector
        except ImportError:
            raise MetricsError(
                "metrics need prometheus-client: pip install '.[metrics]' in the streamrnn clone"
            ) from None
        host, port = parse_address(address)
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # resident memory, CPU seconds, open files
        self.registry.register(_Collector(snapshot))
        self.tick = Histogram(
            "streamrnn_tick_seconds",
            "work of one loop tick: input handled, models run",
            registry=self.registry,
            buckets=TICK_BUCKETS,
        )
        self.lag = Histogram(
            "streamrnn_input_lag_seconds",
            "seconds samples waited between their source and the loop",
            registry=self.registry,
            buckets=LAG_BUCKETS,
        )
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise MetricsError(f"metrics {address}: cannot serve ({exc.strerror})") from None

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Collector:
    """Reads a snapshot at each scrape and gives it as metric families."""

    def __init__(self, snapshot: Callable[[], Snapshot]):
        self._snapshot = snapshot

    def collect(self) -> Iterator:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        s = self._snapshot()
        yield CounterMetricFamily("streamrnn_frames", "frames scored", value=s.frames)
        yield CounterMetricFamily("streamrnn_events_published", "events published", value=s.events)
        yield CounterMetricFamily("streamrnn_drops", "stalls of a subscriber whose queue was full", value=s.drops)
        yield _labelled(CounterMetricFamily, "streamrnn_detections", "detections", ["model", "label"], s.detections)
        yield _labelled(
            CounterMetricFamily, "streamrnn_problems", "things counted and dropped, by kind", ["kind"], s.problems
        )
        yield GaugeMetricFamily("streamrnn_streams", "live streams", value=s.streams)
        yield GaugeMetricFamily("streamrnn_subscribers", "connected subscribers", value=s.subscribers)
        yield _labelled(
            GaugeMetricFamily, "streamrnn_model_load_seconds", "seconds a model took to load", ["model"], s.load_seconds
        )
        yield _labelled(
            CounterMetricFamily,
            "streamrnn_gated_frames",
            "frames a model's gate did not run",
            ["model"],
            s.gated_frames,
        )
        yield _labelled(
            CounterMetricFamily,
            "streamrnn_checked_frames",
            "frames a model's check looked at",
            ["model"],
            s.checked_frames,
        )


def _labelled(family, name: str, text: str, labels: list[str], values: dict):
    """A metric family with one sample per key of `values` (a label value, or a tuple of them), in
    key order."""
    metric = family(name, text, labels=labels)
    for key, value in sorted(values.items()):
        metric.add_metric(list(key) if isinstance(key, tuple) else [key], value)
    return metric
