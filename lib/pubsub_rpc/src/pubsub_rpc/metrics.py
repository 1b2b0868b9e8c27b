"""Prometheus metrics, counted cheaply on the hot path and assembled only when scraped.

prometheus-client's ``Histogram.observe`` takes a lock and walks label dicts on every call;
at tens of thousands of calls a second that is a measurable share of a call. So the hot
path only does a bisect and two additions on plain lists (``LatencyTable``), and a
``Collector`` turns those lists into metric families when Prometheus asks. The exposition,
the HTTP server and the text format are prometheus-client's own.

Names follow OpenTelemetry's RPC conventions in Prometheus form (``rpc_client_call_duration_seconds``,
``rpc_server_call_duration_seconds``, labels ``rpc_method`` and ``code``). Label values
come from action names, which the network chooses: past ``MAX_ACTIONS`` distinct names
the rest are counted as ``_other``, so a hostile sender cannot grow the series without bound.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from .link import Link

log = logging.getLogger(__name__)

# Seconds. From sub-millisecond local round trips to the gateway's 30 s upper bound.
BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
MAX_ACTIONS = 200
MAX_CODES = 50  # error codes come from replies, so from the network too
OTHER = "_other"
READY_HELP = "1 while connected, subscribed and the data-path probe comes back (RPC_PROBE_INTERVAL)"

Source = Callable[[], Iterable[HistogramMetricFamily | CounterMetricFamily | GaugeMetricFamily]]


class LatencyTable:
    """Durations by (action, code): one row of bucket counts plus a running sum each.

    Successes, the bulk of the traffic, are not binned one by one: every reply in one
    socket read ends at the same moment, so the Caller keeps their start times per action
    and bins the whole read at its end (``add_ended``: a sort of a nearly sorted list and a
    bisect or two); the Responder's sync handlers answer within the read, so their
    successes share one duration and are added per action with one bisect per read.
    A bisect and two additions per call (``observe``, used for errors and async handlers)
    cost about 0.2 us in CPython, 4-7 % of the bench's calls/s on the two sides together;
    batched, the metrics cost stays within 5 % (``python -m bench --only metrics``).
    ``ok`` maps each action within the label bound to its success row.
    """

    def __init__(self) -> None:
        # (action, code) -> [count per bucket..., count above the last bucket, sum of seconds]
        self.rows: dict[tuple[str, str], list[float]] = {}
        self.ok: dict[str, list[float]] = {}  # action -> its ("ok") row, for actions within the bound
        self._actions: set[str] = set()
        self._codes: set[str] = set()

    def observe(self, action: str, code: str, seconds: float) -> None:
        row = self.rows.get((action, code))
        if row is None:
            row = self.row(action, code)
        row[bisect_left(BUCKETS, seconds)] += 1
        row[-1] += seconds

    def add_ended(self, action: str, starts: list[float], end: float) -> None:
        """Successes of ``action`` that started at ``starts`` (perf_counter values; sorted
        here, in place) and ended at ``end`` together, as the replies of one socket read do:
        binned with a few bisects for the whole batch instead of one per call."""
        row = self.row(action, "ok")
        starts.sort()  # nearly sorted already: calls start in order
        n = len(starts)
        low = bisect_left(BUCKETS, end - starts[-1])  # the shortest one's bucket
        high = bisect_left(BUCKETS, end - starts[0])  # the longest one's
        if low == high:
            row[low] += n
        else:
            counted = 0  # calls with a duration <= bound started at or after end - bound
            for i in range(low, min(high, len(BUCKETS))):
                within = n - bisect_left(starts, end - BUCKETS[i])
                row[i] += within - counted
                counted = within
            row[high] += n - counted
        row[-1] += n * end - math.fsum(starts)

    def row(self, action: str, code: str) -> list[float]:
        """The row of (action, code), made on first use; ``_other`` past the label bounds."""
        row = self.rows.get((action, code))
        if row is not None:
            return row
        row = self._new_row(action, code)
        if code == "ok" and action in self._actions:  # not when folded into _other: ``ok`` stays bounded
            self.ok[action] = row
        return row

    def _new_row(self, action: str, code: str) -> list[float]:
        if action not in self._actions:
            if len(self._actions) >= MAX_ACTIONS:
                action = OTHER
            self._actions.add(action)
        if code not in self._codes:
            if len(self._codes) >= MAX_CODES:
                code = OTHER
            self._codes.add(code)
        return self.rows.setdefault((action, code), [0.0] * (len(BUCKETS) + 2))

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, documentation, labels=["rpc_method", "code"])
        for (action, code), row in list(self.rows.items()):
            cumulative, buckets = 0.0, []
            for bound, count in zip(BUCKETS, row, strict=False):
                cumulative += count
                buckets.append((_bound(bound), cumulative))
            cumulative += row[len(BUCKETS)]
            buckets.append(("+Inf", cumulative))
            family.add_metric([action, code], buckets, row[-1])
        return family


def _bound(value: float) -> str:
    return repr(value)


def counter(name: str, documentation: str, values: dict[str, int] | int, label: str = "") -> CounterMetricFamily:
    """A counter family from a plain int (no labels) or a dict of label value -> count."""
    if isinstance(values, int):
        return CounterMetricFamily(name, documentation, value=values)
    family = CounterMetricFamily(name, documentation, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def gauge(name: str, documentation: str, values: dict[str, float] | float, label: str = "") -> GaugeMetricFamily:
    if isinstance(values, (int, float)):
        return GaugeMetricFamily(name, documentation, value=values)
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


class Exporter(Collector):
    """Everything one process exposes: each part registers a function that returns its
    families, called only at scrape time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._sources: list[Source] = []
        self._lock = threading.Lock()  # scrapes run on the HTTP server's thread
        self.registry.register(self)

    def add(self, source: Source) -> None:
        with self._lock:
            self._sources.append(source)

    def collect(self) -> Iterator[HistogramMetricFamily | CounterMetricFamily | GaugeMetricFamily]:
        """Each family once: parts that export the same name (a Caller's and a Responder's
        Redis links in one process) have their samples merged under one family."""
        with self._lock:
            sources = list(self._sources)
        merged: dict[str, HistogramMetricFamily | CounterMetricFamily | GaugeMetricFamily] = {}
        for source in sources:
            for family in source():
                first = merged.setdefault(family.name, family)
                if first is not family:
                    first.samples.extend(family.samples)
        yield from merged.values()


def link_families(links: Iterable[Link]) -> list[CounterMetricFamily | GaugeMetricFamily]:
    """Redis connections, labelled by link name (``<name>-sub``, ``<name>-pub``)."""
    up = GaugeMetricFamily("rpc_redis_link_up", "1 while the connection is up (and subscribed)", labels=["link"])
    reconnects = CounterMetricFamily("rpc_redis_link_reconnects", "Connections made after the first one", labels=["link"])
    failures = CounterMetricFamily(
        "rpc_redis_link_liveness_failures",
        "Connections dropped because they stopped working: no answer within REDIS_LIVENESS_TIMEOUT (ping), "
        "a deaf data path (probe), a subscription refused (refused)",
        labels=["link", "reason"],
    )
    connect_failures = CounterMetricFamily(
        "rpc_redis_link_connect_failures",
        "Connection attempts that failed (refused, unreachable, or no handshake within REDIS_CONNECT_TIMEOUT)",
        labels=["link"],
    )
    backpressured = GaugeMetricFamily(
        "rpc_redis_link_backpressured", "1 while over REDIS_MAX_WRITE_BUFFER unsent bytes: new calls fail", labels=["link"]
    )
    for link in links:
        up.add_metric([link.name], 1.0 if link.ready.is_set() else 0.0)
        reconnects.add_metric([link.name], link.reconnects)
        connect_failures.add_metric([link.name], link.connect_failures)
        backpressured.add_metric([link.name], 1.0 if link.backpressured else 0.0)
        for reason, count in sorted(link.liveness_failures.items()):
            failures.add_metric([link.name, reason], count)
    return [up, reconnects, failures, connect_failures, backpressured]


def serve(exporter: Exporter, port: int, host: str = "0.0.0.0") -> tuple[WSGIServer, threading.Thread]:  # noqa: S104
    """prometheus-client's own HTTP server (a daemon thread) on ``host:port``/metrics."""
    server, thread = start_http_server(port, addr=host, registry=exporter.registry)
    return server, thread


@contextlib.contextmanager
def served(port: int, host: str, *sources: Source) -> Iterator[Exporter | None]:
    """``with served(settings.metrics_port, settings.metrics_host, responder.metric_families):``
    /metrics for the block's duration; port 0 serves nothing (the library's default)."""
    if not port:
        yield None
        return
    exporter = Exporter()
    for source in sources:
        exporter.add(source)
    server, thread = serve(exporter, port, host)
    log.info("metrics on http://%s:%d/metrics", host, port)
    try:
        yield exporter
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def sample_value(families: Iterable[HistogramMetricFamily | CounterMetricFamily | GaugeMetricFamily], name: str) -> list[Sample]:
    """The samples named ``name`` (tests and the live view read them this way)."""
    return [sample for family in families for sample in family.samples if sample.name == name]
