"""Many server nodes on one Redis, run as users run them: ``twistd -n chat --store redis://...``.

Each test starts its nodes as twistd subprocesses against a real redis-server on a free port
(the session's shared one, with a key prefix of the test's own, or one the test owns when it
restarts Redis), and drives them with the project's client library.
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from chat.client import ChatClient, ChatError, Stream, connect
from tests.helpers import twistd_server, until, within
from tests.redis_fixtures import RedisServer, redis_server, shared_redis_url

ensure = pytest_twisted.ensureDeferred
__all__ = ["redis_server"]  # the fixture, imported so that tests here can use it

BRIDGE_SENDER = "redis:bridge"


class Cluster:
    """Nodes (twistd subprocesses) on one Redis, and the clients of a test."""

    def __init__(self, url: str, lease: float = 10.0, linger: float = 0) -> None:
        self.url = url
        self.linger = linger
        self.prefix = f"test{uuid.uuid4().hex[:8]}:"
        self.lease = lease
        self.stack = ExitStack()
        self.nodes: list[tuple[subprocess.Popen[Any], int]] = []
        self.clients: list[ChatClient] = []

    def start_node(self) -> tuple[subprocess.Popen[Any], int]:
        options = {
            "--store": self.url,
            "--redis-prefix": self.prefix,
            "--redis-publish-prefix": self.prefix + "publish:",
            "--redis-lease": str(self.lease),
            # Protocol 1.0 sessions (they end with their connection), unless a test says.
            "--session-linger": str(self.linger),
        }
        args = [part for pair in options.items() for part in pair]
        node = self.stack.enter_context(twistd_server(*args))
        self.nodes.append(node)
        return node

    async def client(self, node: int, username: str) -> ChatClient:
        client = await within(connect(f"ws://127.0.0.1:{self.nodes[node][1]}/ws"))
        self.clients.append(client)
        await within(client.login(username))
        return client

    async def close(self) -> None:
        for client in self.clients:
            await within(client.close())
        self.stack.close()


async def cluster_of(url: str, nodes: int, lease: float = 10.0) -> Cluster:
    cluster = Cluster(url, lease)
    for _ in range(nodes):
        cluster.start_node()
    return cluster


@pytest_twisted.async_yield_fixture
async def two_nodes() -> AsyncIterator[Cluster]:
    cluster = await cluster_of(shared_redis_url(), 2)
    yield cluster
    await cluster.close()


async def pause(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


async def take(feed: Stream, count: int) -> list[dict[str, Any]]:
    return [await within(feed.next()) for _ in range(count)]


@ensure
async def test_a_channel_on_two_nodes_has_one_log_with_the_same_seqs(two_nodes: Cluster) -> None:
    alice = await two_nodes.client(0, "alice")
    bob = await two_nodes.client(1, "bob")
    alice_feed, bob_feed = alice.messages(), bob.messages()
    await within(alice.join("general"))
    await within(bob.join("general"))
    answers = []
    for n in range(5):
        answers.append(await within(alice.send("general", f"from A {n}")))
        answers.append(await within(bob.send("general", f"from B {n}")))
    assert [a["seq"] for a in answers] == list(range(3, 13))  # two joins, then 10 messages
    on_b = await take(bob_feed, 11)  # bob's join, then everything after it
    on_a = await take(alice_feed, 12)
    assert on_a[1:] == on_b  # the very same items: same seqs, ts, order and content
    assert [item["seq"] for item in on_a] == list(range(1, 13))
    contents = [item.get("content") for item in on_a[2:]]
    assert contents == [f"from {x} {n}" for n in range(5) for x in "AB"]


@ensure
async def test_a_private_message_crosses_nodes(two_nodes: Cluster) -> None:
    alice = await two_nodes.client(0, "alice")
    bob = await two_nodes.client(1, "bob")
    feed = bob.messages()
    await within(bob.channels())  # a round trip: the feed (which starts at its opening) is open
    answer = await within(alice.send(user="bob", content="psst"))
    item = await within(feed.next())
    assert item["from"] == "alice" and item["to"] == "bob" and item["content"] == "psst"
    assert item["seq"] == answer["seq"] == 1 and item["channel"] is None
    back = await within(bob.send(user="alice", content="hi"))  # bob learned of alice via B
    assert back["seq"] == 2  # [1.1] bob's inbox: alice's message, then his own copy


@ensure
async def test_a_username_live_on_one_node_cannot_log_in_on_another(two_nodes: Cluster) -> None:
    alice = await two_nodes.client(0, "alice")
    other = await within(connect(f"ws://127.0.0.1:{two_nodes.nodes[1][1]}/ws"))
    two_nodes.clients.append(other)
    with pytest.raises(ChatError) as taken:
        await within(other.login("alice"))
    assert taken.value.code == "username_taken"
    await within(alice.close())
    await _login_when_free(two_nodes, 1, "alice")  # free again once alice's session ended


@ensure
async def test_lists_and_statistics_answer_for_the_whole_cluster(two_nodes: Cluster) -> None:
    alice = await two_nodes.client(0, "alice")
    bob = await two_nodes.client(1, "bob")
    carol = await two_nodes.client(1, "carol")
    await within(alice.join("general"))
    await within(bob.join("general"))
    await within(carol.join("random"))
    expected = [{"channel": "general", "users": 2}, {"channel": "random", "users": 1}]
    for client in (alice, bob):
        await _eventually(client.channels, expected)
        await _eventually(lambda c=client: c.users("general"), ["alice", "bob"])
    stats = alice.statistics(["users", "channels"], period=0.2)
    await _eventually(lambda: stats.next(), {"user_count": 3, "channel_count": 2})
    stats.cancel()


async def _eventually(get: Any, expected: Any, seconds: float = 5.0) -> None:
    """``await get()`` until it answers ``expected`` (nodes hear each other within ms)."""
    import time

    deadline = time.monotonic() + seconds
    while True:
        got = await within(get())
        if got == expected:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"got {got!r}, expected {expected!r}")


@ensure
async def test_a_client_recovers_on_another_node_with_since_and_epoch(two_nodes: Cluster) -> None:
    alice = await two_nodes.client(0, "alice")
    bob = await two_nodes.client(0, "bob")
    epoch = bob.epoch
    feed = bob.messages()
    await within(bob.join("general"))
    await within(alice.join("general"))
    await within(alice.send("general", "before"))
    seen = await take(feed, 3)
    since = {"general": seen[-1]["seq"]}
    await within(bob.close())
    for n in range(5):
        await within(alice.send("general", f"missed {n}"))
    await within(alice.send(user="bob", content="private missed"))
    bob = await _login_when_free(two_nodes, 1, "bob")  # the other node
    assert bob.epoch == epoch
    feed = bob.messages({**since, "@": 0}, epoch)
    joined = await within(bob.join("general"))
    items = await take(feed, 1 + 1 + 5 + 1)  # the inbox item, bob's leave, 5 missed, rejoin
    inbox = [item for item in items if item["channel"] is None]
    assert [item["content"] for item in inbox] == ["private missed"]
    channel = [item for item in items if item["channel"] == "general"]
    assert [item["seq"] for item in channel] == list(range(since["general"] + 1, joined["seq"] + 1))
    assert [item.get("content") for item in channel if item["kind"] == "message"] == [
        f"missed {n}" for n in range(5)
    ]


async def _login_when_free(cluster: Cluster, node: int, username: str) -> ChatClient:
    """Log in once the previous session of ``username`` has ended everywhere."""
    url = f"ws://127.0.0.1:{cluster.nodes[node][1]}/ws"
    client = await within(connect(url))
    cluster.clients.append(client)
    for _ in range(200):
        try:
            await within(client.login(username))
            return client
        except ChatError as exc:
            if exc.code != "username_taken":
                raise
            await pause(0.05)
    raise AssertionError(f"{username} stayed taken")


@ensure
async def test_the_publish_bridge_appends_once_and_reaches_every_node(two_nodes: Cluster) -> None:
    alice = await two_nodes.client(0, "alice")
    bob = await two_nodes.client(1, "bob")
    alice_feed, bob_feed = alice.messages(), bob.messages()
    await within(alice.join("updates"))
    await within(bob.join("updates"))
    await take(alice_feed, 2)
    await take(bob_feed, 1)
    port = two_nodes.url.rsplit(":", 1)[1].split("/")[0]
    channel = two_nodes.prefix + "publish:updates"
    await _until_published(port, channel, "deploy done")
    on_a, on_b = await within(alice_feed.next()), await within(bob_feed.next())
    assert on_a == on_b
    assert on_a["from"] == BRIDGE_SENDER and on_a["content"] == "deploy done"
    assert on_a["kind"] == "message" and on_a["channel"] == "updates" and on_a["seq"] == 3
    history = await within(alice.history("updates"))
    assert [item["seq"] for item in history] == [1, 2, 3]  # appended once, not once per node


async def _until_published(port: str, channel: str, text: str) -> None:
    """PUBLISH with redis-cli until a subscriber (every node) heard it; a node's leadership
    is settled within its first heartbeat, before it listens."""
    await until(lambda: _cli(port, "PUBLISH", channel, text).strip() not in ("", "0"))


def _cli(port: str, *args: str) -> str:
    return subprocess.run(
        ["redis-cli", "-p", port, *args], capture_output=True, text=True, check=True
    ).stdout


@ensure
async def test_a_killed_node_s_users_leave_within_the_lease() -> None:
    cluster = await cluster_of(shared_redis_url(), 2, lease=1.5)
    try:
        alice = await cluster.client(0, "alice")
        bob = await cluster.client(1, "bob")
        feed = bob.messages()
        await within(bob.join("general"))
        await within(alice.join("general"))
        await take(feed, 2)
        os.killpg(cluster.nodes[0][0].pid, signal.SIGKILL)
        cluster.nodes[0][0].wait(10)
        cluster.clients.remove(alice)
        leave = await within(feed.next(), 1.5 * 3)  # lease + reaper period + margin
        assert leave["kind"] == "leave" and leave["from"] == "alice" and leave["seq"] == 3
        await _eventually(lambda: bob.users("general"), ["bob"])
        await _eventually(bob.channels, [{"channel": "general", "users": 1}])
        await _login_when_free(cluster, 1, "alice")  # the name is free again
    finally:
        await cluster.close()


async def send_once_back(client: ChatClient, content: str) -> Any:
    """Send until the store answers (``internal`` while Redis is still away)."""
    while True:
        try:
            return await within(client.send("general", content), 4)
        except ChatError as exc:
            assert exc.code == "internal", exc
            await pause(0.1)  # polling a node that reconnects on its own schedule


@ensure
async def test_nodes_survive_a_redis_restart_and_lose_nothing_acknowledged(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    cluster = await cluster_of(redis_server.url, 2)
    try:
        alice = await cluster.client(0, "alice")
        bob = await cluster.client(1, "bob")
        await within(alice.join("general"))
        await within(bob.join("general"))
        acknowledged = []
        for n in range(20):
            acknowledged.append(await within(alice.send("general", f"before {n}")))
        redis_server.stop()
        with pytest.raises(ChatError) as failed:
            await within(bob.send("general", "while Redis is away"), 4)
        assert failed.value.code == "internal"
        assert "unreachable" in failed.value.message
        redis_server.start()  # same port, same append-only file
        sent = await within(send_once_back(bob, "after"), 20)  # the nodes reconnect by themselves
        acknowledged.append(sent)
        for n in range(5):
            acknowledged.append(await within(alice.send("general", f"after {n}")))
        history = await within(alice.history("general", limit=1000))
        by_seq = {item["seq"]: item for item in history}
        for answer in acknowledged:
            assert answer["seq"] in by_seq, answer
        seqs = [item["seq"] for item in history]
        assert seqs == list(range(1, len(seqs) + 1))  # gapless
    finally:
        await cluster.close()
