"""Durability end to end: restarts, crashes, dropped connections, failing disks.

A client that was away (its own network dropped, or the server restarted) logs in, opens
``messages`` with its last positions and the epoch, joins again, and must receive exactly what
it missed: no duplicates, no holes, in order, or an exact ``gap`` where retention removed items.
The twistd tests run the server as users do (a subprocess on a real SQLite file), so SIGTERM
and ``kill -9`` are the real thing.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.endpoints import serverFromString

from chat.client import ChatClient, ChatError, Stream, connect
from chat.connection import Node
from chat.protocol.closes import SHUTDOWN
from chat.service.chat import ChatService
from chat.service.routes import router
from chat.settings import Settings
from chat.stores.sqlite import SqliteLogStore
from tests.helpers import chat_service, twistd_server, until, within

ensure = pytest_twisted.ensureDeferred
# Protocol 1.0 sessions: they end with their connection (a reconnect logs in afresh).
SETTINGS = Settings(store="memory", session_linger=0)


# --- in-process servers on a SQLite file ----------------------------------------------------


@attrs.define
class Server:
    store: SqliteLogStore
    node: Node
    port: Any

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port.getHost().port}/ws"

    @property
    def service(self) -> ChatService:
        return self.node.service


class Servers:
    """Starts servers on one database file; stops what the test left running."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.running: list[Server] = []
        self.clients: list[ChatClient] = []

    async def start(self, **store_options: Any) -> Server:
        from chat.web.site import make_site

        store = SqliteLogStore(self.path, **store_options)
        node = Node(chat_service(store, SETTINGS), router, SETTINGS, reactor)
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(make_site(node))
        server = Server(store, node, port)
        self.running.append(server)
        return server

    async def stop(self, server: Server) -> None:
        """Like a graceful restart: stop listening, end the sessions, close the store."""
        self.running.remove(server)
        await within(server.port.stopListening())
        for connection in list(server.node.connections):
            connection.connection_lost()
            connection.close(SHUTDOWN)
        await within(server.store.close())

    async def client(self, server: Server | str, username: str) -> ChatClient:
        url = server if isinstance(server, str) else server.url
        client = await within(connect(url))
        self.clients.append(client)
        await within(client.login(username))
        return client


@pytest_twisted.async_yield_fixture
async def servers(tmp_path: Path) -> AsyncIterator[Servers]:
    opened = Servers(tmp_path / "chat.db")
    yield opened
    for client in opened.clients:
        await within(client.close())
    for server in list(opened.running):
        await opened.stop(server)


async def take(feed: Stream, count: int) -> list[dict[str, Any]]:
    return [await within(feed.next()) for _ in range(count)]


def key_of(item: dict[str, Any]) -> str:
    return item["channel"] if item["channel"] is not None else "@"


def positions(items: list[dict[str, Any]]) -> dict[str, int]:
    """The ``since`` a client keeps: the last seq it received per log."""
    since: dict[str, int] = {}
    for item in items:
        since[key_of(item)] = item["seq"] if item["kind"] != "gap" else item["last"]
    return since


def by_log(items: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    logs: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        logs.setdefault(key_of(item), []).append(item)
    return logs


async def assert_receives_exactly_the_rest(
    client: ChatClient, feed: Stream, since: dict[str, int], joined_seq: int, channel: str
) -> None:
    """The feed gives every stored item after ``since`` per log, once, in order, then stops."""
    missed_channel = await within(client.history(channel, after=since[channel], limit=1000))
    missed_inbox = await within(client.history(after=since["@"], limit=1000))
    channel_seqs = [item["seq"] for item in missed_channel]
    assert channel_seqs == list(range(since[channel] + 1, joined_seq + 1))  # no holes
    got = by_log(await take(feed, len(missed_channel) + len(missed_inbox)))
    assert got.get(channel, []) == missed_channel
    assert got.get("@", []) == missed_inbox
    marker = await within(client.send(channel, "marker"))
    following = await within(feed.next())  # nothing was delivered twice: next is the marker
    assert (following["seq"], following["content"]) == (marker["seq"], "marker")


@pytest.mark.parametrize("restart", [False, True], ids=["dropped", "dropped+restart"])
@ensure
async def test_a_dropped_client_recovers_exactly_what_it_missed(
    servers: Servers, restart: bool
) -> None:
    server = await servers.start(cache=4)  # a tiny ring: recovery reads come from disk
    alice = await servers.client(server, "alice")
    bob = await servers.client(server, "bob")
    epoch = bob.epoch
    feed = bob.messages()
    await within(bob.join("general"))
    await within(alice.join("general"))
    for n in range(3):
        await within(alice.send("general", f"before {n}"))
        await within(alice.send(user="bob", content=f"private before {n}"))
    seen = await take(feed, 2 + 3 + 3)  # bob's join, alice's join, 3 messages, 3 private
    since = positions(seen)

    bob.transport.abortConnection()  # the network drops; the server notices and bob leaves
    await until(lambda: "bob" not in server.service.sessions, what="bob's session to end")
    for n in range(10):
        await within(alice.send("general", f"missed {n}"))
    for n in range(2):
        await within(alice.send(user="bob", content=f"private missed {n}"))
    if restart:
        await servers.stop(server)
        server = await servers.start(cache=4)

    bob = await servers.client(server, "bob")
    assert bob.epoch == epoch
    feed = bob.messages(since, epoch)
    joined = await within(bob.join("general"))
    await assert_receives_exactly_the_rest(bob, feed, since, joined["seq"], "general")


@ensure
async def test_what_retention_removed_while_away_is_one_exact_gap(servers: Servers) -> None:
    server = await servers.start(retention=5, cache=2)
    alice = await servers.client(server, "alice")
    bob = await servers.client(server, "bob")
    feed = bob.messages()
    await within(bob.join("general"))
    await within(alice.join("general"))
    since = positions(await take(feed, 2))
    bob.transport.abortConnection()
    await until(lambda: "bob" not in server.service.sessions, what="bob's session to end")
    for n in range(20):
        await within(alice.send("general", f"missed {n}"))
    bob = await servers.client(server, "bob")
    feed = bob.messages(since, bob.epoch)
    joined = await within(bob.join("general"))
    first = server.store.first_seq("#general")
    gap = await within(feed.next())
    assert gap == {
        "kind": "gap",
        "channel": "general",
        "first": since["general"] + 1,
        "last": first - 1,
    }
    rest = await take(feed, joined["seq"] - first + 1)
    assert [item["seq"] for item in rest] == list(range(first, joined["seq"] + 1))


@pytest.mark.parametrize(
    "breakage, repair",
    [
        ("PRAGMA query_only = ON", "PRAGMA query_only = OFF"),  # a read-only database
        ("PRAGMA max_page_count = {pages}", "PRAGMA max_page_count = 1000000"),  # disk full
    ],
    ids=["read-only", "disk-full"],
)
@ensure
async def test_a_failing_disk_answers_internal_and_the_server_goes_on(
    servers: Servers, breakage: str, repair: str
) -> None:
    server = await servers.start()
    alice = await servers.client(server, "alice")
    await within(alice.join("general"))
    committed = [await within(alice.send("general", f"kept {n}")) for n in range(3)]
    pages = await within(
        server.store.on_writer(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
    )
    await within(server.store.on_writer(lambda c: c.execute(breakage.format(pages=pages))))
    with pytest.raises(ChatError) as info:
        await within(alice.send("general", "y" * 4000))
    assert info.value.code == "internal"
    assert len(await within(alice.history("general"))) == 4  # the join and what was kept
    await within(server.store.on_writer(lambda c: c.execute(repair)))
    after = await within(alice.send("general", "after"))
    assert after["seq"] == committed[-1]["seq"] + 1  # no hole where the failure was
    seqs = [item["seq"] for item in await within(alice.history("general"))]
    assert seqs == list(range(1, after["seq"] + 1))


# --- twistd: SIGTERM and kill -9 ---------------------------------------------------------


def store_args(path: Path) -> tuple[str, ...]:
    return ("--store", f"sqlite:{path}")


def stop(proc: Any, sig: int) -> None:
    os.killpg(proc.pid, sig)
    assert proc.wait(15) in (0, -sig)


@ensure
async def test_sigterm_restart_keeps_everything_and_since_recovers(tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    clients: list[ChatClient] = []

    async def client(port: int, name: str) -> ChatClient:
        c = await within(connect(f"ws://127.0.0.1:{port}/ws"))
        clients.append(c)
        await within(c.login(name))
        return c

    try:
        with twistd_server(*store_args(db)) as (proc, port):
            alice, bob = await client(port, "alice"), await client(port, "bob")
            epoch = bob.epoch
            feed = bob.messages()
            await within(bob.join("general"))
            await within(alice.join("general"))
            await within(alice.join("random"))  # a channel nobody is in at the restart
            for n in range(10):
                await within(alice.send("general", f"m{n}"))
            for n in range(3):
                await within(alice.send(user="bob", content=f"p{n}"))
            seen = await take(feed, 2 + 10 + 3)  # joins, m0..m9, p0..p2
            m4 = next(item for item in seen if item.get("content") == "m4")
            since = {"general": m4["seq"], "@": 1}  # bob had processed up to m4 and p0
            stop(proc, signal.SIGTERM)
            await within(bob.closed)
        with twistd_server(*store_args(db)) as (proc, port):
            bob = await client(port, "bob")
            assert bob.epoch == epoch  # same store, same epoch: the positions still mean it
            assert [c["channel"] for c in await within(bob.channels())] == ["general", "random"]
            await within(bob.send(user="alice", content="alice is still known"))
            feed = bob.messages(since, epoch)
            joined = await within(bob.join("general"))
            history = await within(bob.history("general", limit=1000))
            contents = [item.get("content") for item in history if item["kind"] == "message"]
            assert contents == [f"m{n}" for n in range(10)]
            await assert_receives_exactly_the_rest(bob, feed, since, joined["seq"], "general")
            stop(proc, signal.SIGTERM)
    finally:
        for c in clients:
            await within(c.close())


async def send_until_killed(client: ChatClient, name: str, acked: dict[int, str]) -> None:
    """Send with 10 requests in flight until the connection dies; note every acknowledgement."""
    n = 0
    while True:
        contents = [f"{name}-{n + i}" for i in range(10)]
        try:
            pending = [client.send("crash", content) for content in contents]
        except ChatError:
            return
        for content, d in zip(contents, pending, strict=True):
            try:
                answer = await d
            except ChatError:
                return
            acked[answer["seq"]] = content
        n += 10


@pytest.mark.slow
@ensure
async def test_kill_9_loses_no_acknowledged_message(tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    acked: dict[int, str] = {}
    for round_ in range(3):
        with twistd_server(*store_args(db)) as (proc, port):
            url = f"ws://127.0.0.1:{port}/ws"
            senders = []
            clients = []
            for i in range(3):
                client = await within(connect(url))
                clients.append(client)
                await within(client.login(f"sender{i}"))
                await within(client.join("crash"))
                senders.append(ensureDeferred(send_until_killed(client, f"r{round_}s{i}", acked)))
            target = len(acked) + 300
            await until(lambda t=target: len(acked) >= t, what="300 acknowledged messages")
            os.killpg(proc.pid, signal.SIGKILL)  # no shutdown, no final commit
            proc.wait(10)
            for sender in senders:
                await within(sender)
            for client in clients:
                await within(client.close())
        with twistd_server(*store_args(db)) as (proc, port):
            checker = await within(connect(f"ws://127.0.0.1:{port}/ws"))
            try:
                await within(checker.login("checker"))
                stored: dict[int, str | None] = {}
                after = 0
                while True:
                    page = await within(checker.history("crash", after=after, limit=1000))
                    if not page:
                        break
                    stored.update((item["seq"], item.get("content")) for item in page)
                    after = page[-1]["seq"]
            finally:
                await within(checker.close())
            assert list(stored) == list(range(1, len(stored) + 1))  # gapless
            missing = {seq: c for seq, c in acked.items() if stored.get(seq) != c}
            assert not missing, f"round {round_}: acknowledged but lost: {list(missing)[:10]}"
            stop(proc, signal.SIGTERM)
