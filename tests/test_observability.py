"""``/metrics``: Prometheus text with the server's counters and gauges."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor
from twisted.web.client import Agent, readBody

from tests.helpers import within

ensure = pytest_twisted.ensureDeferred


async def get(url: str) -> tuple[int, str]:
    response = await within(Agent(reactor).request(b"GET", url.encode()))
    return response.code, (await within(readBody(response))).decode()


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


@ensure
async def test_metrics_count_what_happened(server, client_factory) -> None:
    alice = await client_factory("alice")
    bob = await client_factory("bob")
    feed = bob.messages()
    await within(alice.join("general"))
    await within(bob.join("general"))
    await within(alice.send("general", "hello"))
    while (await within(feed.next()))["kind"] != "message":
        pass
    alice.link.send(b"not json")  # one bad_frame
    await within(alice.join("general"))  # round trip
    http = server.url.replace("ws://", "http://").removesuffix("/ws")
    status, text = await get(http + "/metrics")
    assert status == 200
    assert metric(text, "chat_connections") == 2
    assert metric(text, "chat_users") == 2
    assert metric(text, "chat_channels") == 1
    assert metric(text, "chat_items_appended_total") == 3
    assert metric(text, "chat_deliveries_total") >= 2
    assert 'chat_errors_total{code="bad_frame"} 1.0' in text
    assert metric(text, "chat_store_append_seconds_count") == 3
    assert "chat_paused_streams" in text and "chat_bytes_buffered" in text
    await within(alice.close())
    status, text = await get(http + "/metrics")
    assert 'chat_closes_total{code="1000"}' in text
