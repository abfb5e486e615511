"""Every route of PROTOCOL.md over a real WebSocket, through the project's client library."""

from __future__ import annotations

import pytest
import pytest_twisted

from chat.client import ChatError
from tests.helpers import until, within

ensure = pytest_twisted.ensureDeferred


async def expect_error(d, code: str) -> ChatError:  # type: ignore[no-untyped-def]
    with pytest.raises(ChatError) as info:
        await within(d)
    assert info.value.code == code, info.value
    assert info.value.message
    return info.value


@ensure
async def test_login_answers_username_session_and_epoch(client_factory, server) -> None:
    client = await client_factory()
    answer = await within(client.login("alice"))
    assert answer["username"] == "alice"
    assert answer["epoch"] == server.service.store.epoch
    assert len(answer["session_id"]) >= 16


@pytest.mark.settings(session_linger=0)  # protocol 1.0: a session ends with its connection
@ensure
async def test_login_refuses_a_live_username_and_frees_it_on_close(client_factory) -> None:
    alice = await client_factory("alice")
    other = await client_factory()
    await expect_error(other.request("login", {"username": "alice"}), "username_taken")
    await within(alice.close())
    assert (await within(other.login("alice")))["username"] == "alice"


@ensure
async def test_login_twice_on_one_connection_is_invalid(client_factory) -> None:
    alice = await client_factory("alice")
    await expect_error(alice.request("login", {"username": "bob"}), "invalid_data")


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        {"username": ""},
        {"username": "a" * 33},
        {"username": "no spaces"},
        {"username": "émile"},
        {"username": 7},
        {},
    ],
)
@ensure
async def test_login_validates_the_username(client_factory, data) -> None:
    client = await client_factory()
    await expect_error(client.request("login", data), "invalid_data")


@ensure
async def test_routes_other_than_login_need_a_session(client_factory) -> None:
    client = await client_factory()
    for route, data in [("channel.join", {"channel": "x"}), ("message", {"channel": "x"})]:
        await expect_error(client.request(route, data), "unauthenticated")
    stream = client.stream("channels")
    await expect_error(stream.next(), "unauthenticated")


@ensure
async def test_unknown_route_and_route_with_the_wrong_model(client_factory) -> None:
    client = await client_factory("alice")
    await expect_error(client.request("nope"), "unknown_route")
    error = await expect_error(client.request("channels"), "unknown_route")
    assert "stream" in error.message  # says which model the route takes
    await expect_error(client.stream("login").next(), "unknown_route")


@ensure
async def test_join_creates_the_channel_and_counts_users(client_factory) -> None:
    alice = await client_factory("alice")
    bob = await client_factory("bob")
    assert await within(alice.join("general")) == {"channel": "general", "seq": 1, "users": 1}
    assert await within(bob.join("general")) == {"channel": "general", "seq": 2, "users": 2}
    # idempotent: no new item, the seq of the last item
    await within(alice.send("general", "hi"))
    assert await within(alice.join("general")) == {"channel": "general", "seq": 3, "users": 2}
    assert await bob.channels() == [{"channel": "general", "users": 2}]


@ensure
async def test_leave_is_idempotent_and_the_channel_stays(client_factory) -> None:
    alice = await client_factory("alice")
    await within(alice.join("general"))
    assert await within(alice.leave("general")) == {"channel": "general"}
    assert await within(alice.leave("general")) == {"channel": "general"}
    assert await within(alice.leave("never-joined")) == {"channel": "never-joined"}
    assert await alice.channels() == [{"channel": "general", "users": 0}]
    items = await alice.history("general")
    assert [(i["kind"], i["seq"]) for i in items] == [("join", 1), ("leave", 2)]


@ensure
async def test_channel_message_reaches_every_member_with_its_seq(client_factory) -> None:
    alice = await client_factory("alice")
    bob = await client_factory("bob")
    feeds = [alice.messages(), bob.messages()]
    await within(alice.join("general"))
    await within(bob.join("general"))
    ack = await within(alice.send("general", "hello"))
    assert ack["channel"] == "general" and ack["seq"] == 3 and isinstance(ack["ts"], int)
    for feed in feeds:
        items = [await within(feed.next()) for _ in range(3 if feed is feeds[0] else 2)]
        last = items[-1]
        assert last == {
            "kind": "message",
            "channel": "general",
            "from": "alice",
            "content": "hello",
            "client_id": ack["client_id"],  # the library gives every message one
            "seq": 3,
            "ts": ack["ts"],
        }


@ensure
async def test_message_to_a_channel_one_is_not_in_is_forbidden(client_factory) -> None:
    alice = await client_factory("alice")
    bob = await client_factory("bob")
    await within(alice.join("general"))
    error = await expect_error(bob.send("general", "x"), "forbidden")
    assert "join" in error.message
    error = await expect_error(bob.send("nowhere", "x"), "forbidden")
    assert "does not exist" in error.message


@pytest.mark.parametrize(
    "data",
    [
        {"channel": "general"},
        {"channel": "general", "content": ""},
        {"channel": "general", "content": "x" * 4097},
        {"channel": "general", "content": 5},
        {"channel": "bad name", "content": "x"},
        {"content": "x"},
        {"channel": "general", "user": "bob", "content": "x"},
        "text",
    ],
)
@ensure
async def test_message_validation(client_factory, data) -> None:
    alice = await client_factory("alice")
    await within(alice.join("general"))
    await expect_error(alice.request("message", data), "invalid_data")


@ensure
async def test_content_is_counted_in_code_points(client_factory) -> None:
    alice = await client_factory("alice")
    await within(alice.join("general"))
    await within(alice.send("general", "é" * 4096))  # 8192 bytes, 4096 code points
    await expect_error(alice.send("general", "😀" * 4097), "invalid_data")


@ensure
async def test_private_message_reaches_both_inboxes(client_factory) -> None:
    alice = await client_factory("alice")
    bob = await client_factory("bob")
    await within(bob.send(user="alice", content="first"))  # alice's inbox 1, bob's 1
    alice_feed, bob_feed = alice.messages(), bob.messages()
    ack = await within(alice.send(user="bob", content="psst"))
    assert ack == {
        "channel": None,
        "seq": 2,
        "ts": ack["ts"],
        "duplicate": False,
        "client_id": ack["client_id"],
    }
    sent = {
        "kind": "message",
        "channel": None,
        "from": "alice",
        "to": "bob",
        "content": "psst",
        "client_id": ack["client_id"],
    }
    assert await within(bob_feed.next()) == {**sent, "seq": 2, "ts": ack["ts"]}
    # [1.1] the sender's own copy, in its own inbox with that inbox's seq (the response's)
    assert await within(alice_feed.next()) == {**sent, "seq": 2, "ts": ack["ts"]}
    assert [i["content"] for i in await bob.history()] == ["first", "psst"]
    assert [i["content"] for i in await alice.history()] == ["first", "psst"]


@pytest.mark.settings(session_linger=0)
@ensure
async def test_private_message_to_offline_known_user_and_to_unknown_user(client_factory) -> None:
    alice = await client_factory("alice")
    bob = await client_factory("bob")
    await within(bob.close())
    await within(alice.send(user="bob", content="later"))
    await expect_error(alice.send(user="nobody", content="x"), "not_found")
    bob = await client_factory("bob")
    feed = bob.messages(since={"@": 0})
    assert (await within(feed.next()))["content"] == "later"


@ensure
async def test_channels_are_sorted_by_code_point(client_factory) -> None:
    alice = await client_factory("alice")
    for name in ["b", "B", "a", "_", "0"]:
        await within(alice.join(name))
    assert [c["channel"] for c in await alice.channels()] == ["0", "B", "_", "a", "b"]


@ensure
async def test_channel_users_sorted_and_unknown_channel_empty(client_factory) -> None:
    clients = [await client_factory(name) for name in ["carol", "alice", "Bob"]]
    for client in clients:
        await within(client.join("general"))
    assert await clients[0].users("general") == ["Bob", "alice", "carol"]
    assert await clients[0].users("void") == []
    await expect_error(
        clients[0].stream("channel.users", {"channel": "a b"}).next(), "invalid_data"
    )


@ensure
async def test_history_before_after_limit(client_factory) -> None:
    alice = await client_factory("alice")
    await within(alice.join("general"))  # seq 1
    for i in range(2, 11):
        await within(alice.send("general", f"m{i}"))  # seqs 2..10
    seqs = lambda items: [i["seq"] for i in items]  # noqa: E731
    assert seqs(await alice.history("general")) == list(range(1, 11))
    assert seqs(await alice.history("general", limit=3)) == [8, 9, 10]
    assert seqs(await alice.history("general", before=5, limit=2)) == [3, 4]
    assert seqs(await alice.history("general", after=5, limit=2)) == [6, 7]
    assert seqs(await alice.history("general", after=2, before=6)) == [3, 4, 5]
    assert seqs(await alice.history("general", after=3, before=9, limit=2)) == [4, 5]
    assert await alice.history("unknown") == []
    for bad in [{"limit": 0}, {"limit": 1001}, {"before": "x"}, {"after": -1}, {"channel": 1}]:
        await expect_error(alice.stream("history", bad).next(), "invalid_data")


@ensure
async def test_history_honours_credit(client_factory) -> None:
    alice = await client_factory("alice")
    await within(alice.join("general"))
    for i in range(5):
        await within(alice.send("general", f"m{i}"))
    stream = alice.stream("history", {"channel": "general"}, window=2)
    items = await stream.collect()  # the library grants credit as items are consumed
    assert [i["seq"] for i in items] == [1, 2, 3, 4, 5, 6]


@ensure
async def test_statistics_fire_is_stored_and_never_answered(client_factory, server) -> None:
    alice = await client_factory("alice")
    alice.send_statistics(123456)
    alice._send({"type": "fire", "route": "statistics", "data": {"memory_usage": -1}})
    alice._send({"type": "fire", "route": "nope"})
    await within(alice.join("x"))  # a round trip: the fires were read before this answer
    assert server.service.sessions["alice"].client_memory == 123456
    assert alice.protocol_errors == []


@ensure
async def test_statistics_channel_ids_period_changes_and_cancel(client_factory) -> None:
    alice = await client_factory("alice")
    await within(alice.join("general"))
    stats = alice.statistics()
    assert await within(stats.next()) == {"user_count": 1, "channel_count": 1}
    stats.set_ids(["connections", "messages", "memory"])
    item = await within(stats.next())
    while set(item) != {"connection_count", "message_count", "memory_usage"}:
        item = await within(stats.next())  # a tick may have been in flight
    assert item["connection_count"] == 1 and item["message_count"] == 1
    assert item["memory_usage"] > 1_000_000
    stats.set_period(0.1)
    for _ in range(3):  # ticks keep coming at the new period
        await within(stats.next(), 5)
    stats.cancel()
    await within(stats.when_done())


@pytest.mark.parametrize(
    "data",
    [
        {"ids": ["bogus"]},
        {"ids": []},
        {"ids": "users"},
        {"period_seconds": 0.01},
        {"period_seconds": 3601},
        {"period_seconds": "1"},
        [1],
    ],
)
@ensure
async def test_statistics_channel_refuses_bad_options(client_factory, data) -> None:
    alice = await client_factory("alice")
    stream = alice.stream("statistics", data, kind="channel")
    await expect_error(stream.next(), "invalid_data")


@ensure
async def test_statistics_change_with_bad_options_ends_the_channel(client_factory) -> None:
    alice = await client_factory("alice")
    stats = alice.statistics(["users"], 60)
    await within(stats.next())
    stats.set_ids(["nope"])
    await expect_error(stats.when_done(), "invalid_data")


@ensure
async def test_duplicate_id_refuses_the_new_frame_and_keeps_the_open_one(client_factory) -> None:
    alice = await client_factory("alice")
    feed = alice.messages()
    alice._send(
        {"type": "request", "id": feed.id, "route": "channel.join", "data": {"channel": "x"}}
    )
    await until(lambda: bool(alice.protocol_errors))
    assert alice.protocol_errors[0]["id"] == feed.id
    assert alice.protocol_errors[0]["error"]["code"] == "duplicate_id"
    await within(alice.join("y"))
    assert (await within(feed.next()))["channel"] == "y"  # the open feed goes on


@ensure
async def test_sixty_fifth_interaction_is_rate_limited(client_factory) -> None:
    alice = await client_factory("alice")
    streams = [alice.messages() for _ in range(64)]
    await expect_error(alice.messages().next(), "rate_limited")
    streams[0].cancel()
    second = alice.messages()  # the 64th open one again
    streams[1].cancel()
    await within(alice.join("x"))  # a round trip: everything before it was answered
    assert not second.ended


@ensure
async def test_bad_frame_keeps_the_connection_usable(client_factory) -> None:
    alice = await client_factory("alice")
    alice.link.send(b"{not json")
    await until(lambda: bool(alice.protocol_errors))
    assert alice.protocol_errors[0]["error"]["code"] == "bad_frame"
    assert alice.protocol_errors[0]["id"] is None
    assert (await within(alice.join("x")))["seq"] == 1
