"""Prometheus metrics of one server, served at ``/metrics`` (prometheus-client).

Counters that the hot path must not pay for twice (items appended, deliveries, bytes) are
plain integers the server keeps anyway; a custom collector reads them at scrape time, as it
reads the gauges (connections, users, paused streams, bytes buffered in transports). Only the
append latency is a real :class:`~prometheus_client.Histogram`, observed once per append.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from chat.connection import Node

PREFIX = "chat_"


def transport_buffered(transport: Any) -> int:
    """Bytes a Twisted transport holds that the kernel has not taken yet."""
    try:
        pending = len(transport.dataBuffer) - transport.offset + transport._tempDataLen
        return int(pending)
    except (AttributeError, TypeError):
        return 0


class NodeCollector(Collector):
    """Reads the node's state and counters at each scrape."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        node, service = self.node, self.node.service
        connections = list(node.connections)

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(PREFIX + name, doc, value=value)

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(PREFIX + name, doc, value=value)

        yield gauge("connections", "Open WebSocket connections.", service.connection_count)
        yield gauge(
            "users", "Live sessions on this node (lingering ones included).", len(service.sessions)
        )
        yield gauge(
            "lingering_sessions",
            "Sessions on this node waiting to be resumed (no connection attached).",
            sum(1 for session in service.sessions.values() if not session.connections),
        )
        yield gauge("channels", "Channels that exist.", service.store.channel_count())
        paused = sum(
            1
            for connection in connections
            for stream in connection.outbound.streams.values()
            if stream.paused
        )
        yield gauge("paused_streams", "Outbound streams paused by backpressure.", paused)
        yield gauge(
            "paused_connections",
            "Connections whose transport buffer is full.",
            sum(1 for connection in connections if connection.outbound.paused),
        )
        buffered = sum(transport_buffered(connection.transport) for connection in connections)
        yield gauge("bytes_buffered", "Bytes waiting in transport buffers.", buffered)
        yield counter("items_appended", "Items appended to any log.", service.message_count)
        yield counter("deliveries", "Stream items written.", node.scheduler.deliveries)
        yield counter("bytes_written", "Bytes written by producers.", node.scheduler.bytes_written)
        yield counter(
            "pongs_excused",
            "Ping timeouts forgiven because the client was slow, not gone.",
            node.pongs_excused,
        )
        errors = CounterMetricFamily(PREFIX + "errors", "Error frames sent.", labels=["code"])
        for code, count in sorted(node.errors.items()):
            errors.add_metric([code], count)
        yield errors
        closes = CounterMetricFamily(
            PREFIX + "closes", "Connections closed, by close code.", labels=["code"]
        )
        for close_code, count in sorted(node.closes.items()):
            closes.add_metric([str(close_code)], count)
        yield closes


def make_registry(node: Node) -> CollectorRegistry:
    """A registry of this node's metrics; hooks the append-latency histogram in."""
    registry = CollectorRegistry()
    registry.register(NodeCollector(node))
    latency = Histogram(
        PREFIX + "store_append_seconds",
        "Time from append to stored (committed), per item.",
        registry=registry,
        buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1),
    )
    node.service.append_latency = latency.observe
    return registry
