"""Each limit refuses with its documented error or close code, and is configurable."""

from __future__ import annotations

import pytest
import pytest_twisted

from chat.client import ChatError, connect
from chat.settings import Settings
from tests.conftest import start_server, stop_server
from tests.helpers import until, within

ensure = pytest_twisted.ensureDeferred


@ensure
async def test_message_rate_limit_refuses_with_rate_limited() -> None:
    server = await start_server(Settings(store="memory", message_rate=0.001, message_burst=3))
    client = await within(connect(server.url))
    try:
        await within(client.login("alice"))
        await within(client.join("general"))
        for _ in range(3):
            await within(client.send("general", "ok"))
        with pytest.raises(ChatError) as info:
            await within(client.send("general", "one too many"))
        assert info.value.code == "rate_limited" and "per second" in info.value.message
        assert (await within(client.join("other")))["channel"] == "other"  # still usable
    finally:
        await within(client.close())
        await stop_server(server)


@ensure
async def test_channels_per_user_limit_refuses_with_forbidden() -> None:
    server = await start_server(Settings(store="memory", max_channels_per_user=2))
    client = await within(connect(server.url))
    try:
        await within(client.login("alice"))
        await within(client.join("a"))
        await within(client.join("b"))
        with pytest.raises(ChatError) as info:
            await within(client.join("c"))
        assert info.value.code == "forbidden" and "at most 2 channels" in info.value.message
        await within(client.join("a"))  # already a member: still fine
        await within(client.leave("b"))
        await within(client.join("c"))
    finally:
        await within(client.close())
        await stop_server(server)


@ensure
async def test_no_login_in_time_closes_with_1008() -> None:
    server = await start_server(Settings(store="memory", login_timeout=0.2))
    client = await within(connect(server.url))
    try:
        code, reason = await within(client.closed)
        assert code == 1008 and "login" in reason
    finally:
        await stop_server(server)


@ensure
async def test_login_in_time_keeps_the_connection() -> None:
    server = await start_server(Settings(store="memory", login_timeout=0.3))
    client = await within(connect(server.url))
    try:
        await within(client.login("alice"))
        assert next(iter(server.node.connections)).login_timer is None  # cancelled and dropped
        assert not client.closed.called
    finally:
        await within(client.close())
        await stop_server(server)


@ensure
async def test_connections_per_address_limit_refuses_the_handshake() -> None:
    server = await start_server(Settings(store="memory", max_connections_per_ip=2))
    clients = [await within(connect(server.url)) for _ in range(2)]
    try:
        with pytest.raises(ConnectionError):
            await within(connect(server.url))
    finally:
        for client in clients:
            await within(client.close())
        await stop_server(server)


@ensure
async def test_a_peer_that_stops_answering_pings_is_closed_and_leaves() -> None:
    server = await start_server(
        Settings(store="memory", ping_interval=1, ping_timeout=1, session_linger=0)
    )
    watcher = await within(connect(server.url))
    silent = await within(connect(server.url))
    try:
        await within(watcher.login("watcher"))
        feed = watcher.messages()
        await within(watcher.join("room"))
        await within(silent.login("silent"))
        await within(silent.join("room"))
        silent.transport.pauseProducing()  # reads nothing more, so answers no ping
        items = [await within(feed.next()) for _ in range(3)]
        assert items[-1]["kind"] == "leave" and items[-1]["from"] == "silent"
        assert await within(watcher.users("room")) == ["watcher"]
    finally:
        silent.transport.resumeProducing()
        await within(watcher.close())
        await stop_server(server)


@ensure
async def test_a_slow_consumer_is_not_dropped_for_missing_pongs() -> None:
    """Keepalive must not undo backpressure: a client that does not read is not dead."""
    import socket

    server = await start_server(Settings(store="memory", ping_interval=1, ping_timeout=1))
    slow = await within(connect(server.url))
    publisher = await within(connect(server.url))
    try:
        await within(slow.login("slow"))
        feed = slow.messages(window=None)
        await within(slow.join("flood"))
        assert (await within(feed.next()))["seq"] == 1
        server_side = next(
            c for c in server.node.connections if c.session and c.session.username == "slow"
        )
        server_side.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        slow.transport.pauseProducing()  # reads nothing more: sees no ping, sends no pong
        await within(publisher.login("publisher"))
        await within(publisher.join("flood"))  # seq 2
        items = 4000  # about 1 MB: far more than the kernel buffers hold
        for _batch in range(items // 250):
            for ack in [publisher.send("flood", "x" * 200) for _ in range(250)]:
                await within(ack)
        await until(lambda: server.node.pongs_excused >= 2, what="ping timeouts while stalled")
        assert not server_side.lost and not slow.closed.called
        slow.transport.resumeProducing()
        received = [await within(feed.next()) for _ in range(items + 1)]
        assert [i["seq"] for i in received] == list(range(2, items + 3))
    finally:
        await within(publisher.close())
        if not slow.closed.called:
            await within(slow.close())
        await stop_server(server)


def test_joins_and_leaves_are_charged_to_their_own_rate_limit() -> None:
    from tests.producer_harness import Harness

    harness = Harness(join_rate=5, join_burst=10)
    conn = harness.connect("alice")
    for n in range(40):
        route = "channel.join" if n % 2 == 0 else "channel.leave"
        conn.client(type="request", id=n + 1, route=route, data={"channel": "churn"})
    harness.settle()
    answers = [conn.frames(n + 1)[0] for n in range(40)]
    assert [a["type"] for a in answers[:10]] == ["response"] * 10
    assert {a["error"]["code"] for a in answers[10:]} == {"rate_limited"}
    assert "retry in" in answers[10]["error"]["message"]
    assert harness.store.last_seq("#churn") == 10  # each refused request appended nothing
    harness.advance(1)  # five more tokens a second
    assert conn.request("channel.join", {"channel": "churn"})["type"] == "response"


def test_the_server_wide_channel_limit_refuses_only_new_channels() -> None:
    from tests.producer_harness import Harness

    harness = Harness(max_channels=3)
    alice, bob = harness.connect("alice"), harness.connect("bob")
    for name in ("a", "b", "c"):
        alice.join(name)
    refused = bob.request("channel.join", {"channel": "d"})
    assert refused["type"] == "error" and refused["error"]["code"] == "forbidden"
    assert "limit" in refused["error"]["message"]
    assert bob.request("channel.join", {"channel": "a"})["type"] == "response"
    assert harness.store.channel_count() == 3
