"""The ``messages`` feed over real connections: start positions, since/epoch, leave, rejoin."""

from __future__ import annotations

import pytest
import pytest_twisted

from chat.settings import Settings
from tests.conftest import start_server, stop_server
from tests.helpers import within

ensure = pytest_twisted.ensureDeferred


async def take(feed, n: int) -> list[dict]:  # type: ignore[no-untyped-def]
    return [await within(feed.next()) for _ in range(n)]


def brief(items: list[dict]) -> list[tuple]:
    return [(i["kind"], i.get("channel"), i.get("seq"), i.get("content")) for i in items]


@ensure
async def test_feed_starts_at_own_join_item_for_channels_joined_before(client_factory) -> None:
    alice = await client_factory("alice")
    bob = await client_factory("bob")
    await within(bob.join("general"))  # seq 1: before alice, not delivered to her
    await within(alice.join("general"))  # seq 2
    await within(bob.send("general", "hi"))  # seq 3
    feed = alice.messages()
    assert brief(await take(feed, 2)) == [
        ("join", "general", 2, None),
        ("message", "general", 3, "hi"),
    ]


@ensure
async def test_inbox_starts_at_feed_opening_without_since(client_factory) -> None:
    alice = await client_factory("alice")
    bob = await client_factory("bob")
    await within(bob.send(user="alice", content="before"))
    feed = alice.messages()
    await within(alice.channels())  # a round trip: the feed is open before bob sends
    await within(bob.send(user="alice", content="after"))
    assert brief(await take(feed, 1)) == [("message", None, 2, "after")]


@ensure
async def test_leave_item_is_the_last_delivered_and_rejoin_starts_at_new_join(
    client_factory,
) -> None:
    alice = await client_factory("alice")
    bob = await client_factory("bob")
    feed = alice.messages()
    await within(bob.join("general"))  # 1
    await within(alice.join("general"))  # 2
    await within(alice.leave("general"))  # 3
    await within(bob.send("general", "missed"))  # 4: alice is not a member
    await within(alice.join("general"))  # 5
    await within(bob.send("general", "seen"))  # 6
    assert brief(await take(feed, 4)) == [
        ("join", "general", 2, None),
        ("leave", "general", 3, None),
        ("join", "general", 5, None),
        ("message", "general", 6, "seen"),
    ]


@pytest.mark.settings(session_linger=0)  # protocol 1.0: a session ends with its connection
@ensure
async def test_reconnect_with_since_receives_exactly_what_was_missed(client_factory) -> None:
    alice = await client_factory("alice")
    bob = await client_factory("bob")
    feed = alice.messages()
    await within(alice.join("general"))  # 1
    await within(bob.join("general"))  # 2
    await within(bob.send("general", "one"))  # 3
    seen = await take(feed, 3)
    epoch = alice.epoch
    await within(alice.close())  # leave item 4
    await within(bob.send("general", "two"))  # 5
    await within(bob.send(user="alice", content="private"))  # inbox 1
    alice = await client_factory("alice")
    feed = alice.messages(since={"general": seen[-1]["seq"], "@": 0}, epoch=epoch)
    await within(alice.join("general"))  # 6
    items = await take(feed, 4)
    by_log = sorted(brief(items), key=lambda t: (t[1] or "", t[2]))
    assert by_log == [
        ("message", None, 1, "private"),
        ("leave", "general", 4, None),
        ("message", "general", 5, "two"),
        ("join", "general", 6, None),
    ]


@ensure
async def test_since_is_void_when_epoch_differs(client_factory) -> None:
    alice = await client_factory("alice")
    bob = await client_factory("bob")
    await within(bob.join("general"))  # 1
    await within(bob.send("general", "old"))  # 2
    feed = alice.messages(since={"general": 0}, epoch="another-store")
    await within(alice.join("general"))  # 3
    assert brief(await take(feed, 1)) == [("join", "general", 3, None)]


@ensure
async def test_since_applies_only_the_first_time(client_factory) -> None:
    alice = await client_factory("alice")
    bob = await client_factory("bob")
    await within(bob.join("general"))  # 1
    feed = alice.messages(since={"general": 0})
    await within(alice.join("general"))  # 2
    assert [i["seq"] for i in await take(feed, 2)] == [1, 2]
    await within(alice.leave("general"))  # 3
    await within(bob.send("general", "x"))  # 4
    await within(alice.join("general"))  # 5
    assert [i["seq"] for i in await take(feed, 2)] == [3, 5]


@ensure
async def test_two_feeds_on_one_connection_each_get_every_item(client_factory) -> None:
    alice = await client_factory("alice")
    feeds = [alice.messages(), alice.messages()]
    await within(alice.join("general"))
    await within(alice.send("general", "both"))
    for feed in feeds:
        assert [i["seq"] for i in await take(feed, 2)] == [1, 2]


@pytest.mark.settings(session_linger=0)  # protocol 1.0: a session ends with its connection
@ensure
async def test_closing_the_connection_leaves_every_channel(client_factory) -> None:
    alice = await client_factory("alice")
    bob = await client_factory("bob")
    feed = bob.messages()
    for channel in ["a", "b"]:
        await within(bob.join(channel))
        await within(alice.join(channel))
    await within(alice.close())
    items = await take(feed, 6)
    leaves = sorted((i["channel"], i["from"]) for i in items if i["kind"] == "leave")
    assert leaves == [("a", "alice"), ("b", "alice")]
    assert await bob.users("a") == ["bob"]


@ensure
async def test_retention_gap_is_reported_exactly() -> None:
    server = await start_server(Settings(store="memory", retention=5))
    from chat.client import connect

    alice = await within(connect(server.url))
    try:
        await within(alice.login("alice"))
        await within(alice.join("general"))  # 1
        for i in range(2, 13):
            await within(alice.send("general", f"m{i}"))  # 2..12; 8..12 retained
        feed = alice.messages(since={"general": 2})
        items = await take(feed, 6)
        assert items[0] == {"kind": "gap", "channel": "general", "first": 3, "last": 7}
        assert [i["seq"] for i in items[1:]] == [8, 9, 10, 11, 12]
        history = await within(alice.history("general"))
        assert [i["seq"] for i in history] == [8, 9, 10, 11, 12]
    finally:
        await within(alice.close())
        await stop_server(server)
