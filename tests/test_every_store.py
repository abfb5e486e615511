"""The promises on every store, over real sockets, with a client the project did not write.

Each store (memory, SQLite, Redis) runs as users run it — ``twistd -n chat`` — with its memory
cache shrunk to 16 items per log, so a reader a few dozen items behind already reads from the
backing store in pages. On each:

- requests sent in one TCP write take effect in the order they arrive (PROTOCOL.md, Rules in
  detail): a message right after a join is accepted, right after a leave forbidden, history
  and channel.users see what came before, per-user limits count pipelined requests one by one;
- a reader any distance behind gets every retained item, in order, without waiting for new
  appends, and one exact ``gap`` for what retention removed.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tests.peer import STORES, Peer, code, data, store_server

CACHE = "16"


@pytest.fixture(scope="module", params=STORES)
def url(request: Any) -> Iterator[str]:
    options = ["--cache", CACHE, "--max-channels-per-user", "5", "--retention", "20000"]
    with store_server(request.param, *options) as ws_url:
        yield ws_url


class Names:
    """Names unique to one test, on a server that lives for the module."""

    count = 0

    def __call__(self, base: str) -> str:
        Names.count += 1
        return f"{base}{Names.count}"


name = Names()


@pytest.fixture
def peers(url: str) -> Iterator[Any]:
    opened: list[Peer] = []

    def open_peer(username: str | None = None) -> Peer:
        peer = Peer(url)
        opened.append(peer)
        if username is not None:
            assert data(peer.request("login", {"username": username}))["username"] == username
        return peer

    yield open_peer
    for peer in opened:
        peer.close()


# --- requests take effect in the order they arrive -------------------------------------


def test_login_join_message_in_one_write(peers: Any) -> None:
    peer = peers()
    room = name("room")
    frames = [
        peer.request_frame("login", {"username": name("alice")}),
        peer.request_frame("channel.join", {"channel": room}),
        peer.request_frame("message", {"channel": room, "content": "at once"}),
    ]
    peer.pipelined(frames)
    login, join, message = (peer.answer(f["id"]) for f in frames)
    assert data(login)["resumed"] is False
    assert data(join)["seq"] == 1
    assert data(message)["seq"] == 2


def test_a_message_right_after_a_join_is_accepted_and_after_a_leave_forbidden(peers: Any) -> None:
    peer = peers(name("alice"))
    room = name("room")
    frames = [
        peer.request_frame("channel.join", {"channel": room}),
        peer.request_frame("message", {"channel": room, "content": "joined"}),
        peer.request_frame("channel.leave", {"channel": room}),
        peer.request_frame("message", {"channel": room, "content": "left"}),
        peer.request_frame("channel.join", {"channel": room}),
        peer.request_frame("message", {"channel": room, "content": "back"}),
    ]
    peer.pipelined(frames)
    answers = [peer.answer(f["id"]) for f in frames]
    assert data(answers[1])["seq"] == 2
    assert code(answers[3]) == "forbidden"
    assert data(answers[4])["seq"] == 4  # join 1, message 2, leave 3, join 4
    assert data(answers[5])["seq"] == 5


def test_history_and_channel_users_see_what_was_sent_before_them(peers: Any) -> None:
    peer = peers(alice := name("alice"))
    room = name("room")
    peer.pipelined(
        [
            peer.request_frame("channel.join", {"channel": room}),
            {"type": "stream", "id": 7, "route": "channel.users", "data": {"channel": room}},
            peer.request_frame("message", {"channel": room, "content": "one"}),
            peer.request_frame("message", {"channel": room, "content": "two"}),
            {"type": "stream", "id": 8, "route": "history", "data": {"channel": room}},
            peer.request_frame("message", {"user": alice, "content": "note to self"}),
            {"type": "stream", "id": 9, "route": "history"},
        ]
    )
    assert peer.items(7, 1) == [{"username": alice, "online": True}]
    history = peer.items(8, 3)
    assert [i.get("content") for i in history] == [None, "one", "two"]
    assert peer.wait(lambda f: f.get("id") == 8)["type"] == "complete"  # and nothing later
    assert [i["content"] for i in peer.items(9, 1)] == ["note to self"]


def test_pipelined_joins_count_against_the_channel_limit_one_by_one(peers: Any) -> None:
    peer = peers(name("alice"))
    base = name("lim")
    frames = [peer.request_frame("channel.join", {"channel": f"{base}_{n}"}) for n in range(60)]
    peer.pipelined(frames)
    answers = [peer.answer(f["id"]) for f in frames]
    assert [a["type"] for a in answers[:5]] == ["response"] * 5  # --max-channels-per-user 5
    assert all(code(a) == "forbidden" for a in answers[5:])
    assert [c["channel"] for c in peer.collect(3, "conversations") if c["channel"]] == [
        f"{base}_{n}" for n in sorted(range(5), key=str)
    ]


def test_a_read_position_is_seen_by_conversations_sent_right_after(peers: Any) -> None:
    alice, bob = name("alice"), name("bob")
    room = name("room")
    a = peers(alice)
    b = peers(bob)
    data(a.request("channel.join", {"channel": room}))
    data(b.request("channel.join", {"channel": room}))
    last = data(b.request("message", {"channel": room, "content": "unread?"}))["seq"]
    a.pipelined(
        [
            a.request_frame("read", {"channel": room, "seq": last}),
            {"type": "stream", "id": 5, "route": "conversations"},
        ]
    )
    rows = [a.wait(lambda f: f.get("id") == 5)["data"] for _ in range(2)]
    assert rows[0] == {"channel": room, "last_seq": last, "read_seq": last, "unread": 0}


# --- far-behind readers catch up ---------------------------------------------------------


def send_many(peer: Peer, channel: str, count: int, content: str) -> int:
    """``count`` messages, pipelined 50 per write (64 may be open at once); the last seq."""
    last = 0
    for start in range(0, count, 50):
        frames = [
            peer.request_frame("message", {"channel": channel, "content": content})
            for _ in range(min(50, count - start))
        ]
        peer.pipelined(frames)
        last = max(data(peer.answer(f["id"]))["seq"] for f in frames)
    return last


def test_a_new_reader_from_since_zero_receives_every_item(peers: Any) -> None:
    poster = peers(name("poster"))
    room = name("r")
    data(poster.request("channel.join", {"channel": room}))
    last = send_many(poster, room, 3000, "x" * 300)
    reader = peers()
    epoch = data(reader.request("login", {"username": name("reader")}))["epoch"]
    reader.send(
        {"type": "stream", "id": 2, "route": "messages",
         "data": {"since": {room: 0}, "epoch": epoch}}
    )  # fmt: skip
    join = data(reader.request("channel.join", {"channel": room}))["seq"]
    items = reader.items(2, join)
    assert [i["seq"] for i in items] == list(range(1, last + 2))
    assert not [i for i in items if i["kind"] == "gap"]


def test_a_stalled_reader_far_past_retention_gets_one_gap_then_everything(url: str) -> None:
    # A small receive window, so the server's buffers (not the kernel's) fill and it pauses.
    reader = Peer(url, sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 16384),))
    poster = Peer(url)
    try:
        data(reader.request("login", {"username": name("stalled")}))
        room = name("flood")
        reader.send({"type": "stream", "id": 2, "route": "messages"})
        assert data(reader.request("channel.join", {"channel": room}))["seq"] == 1
        data(poster.request("login", {"username": name("poster")}))
        data(poster.request("channel.join", {"channel": room}))  # 2
        last = send_many(poster, room, 45_000, "y" * 300)  # 3..45002; 25003.. retained
        items = read_until(reader, 2, last)
    finally:
        reader.close()
        poster.close()
    gaps = [i for i in items if i["kind"] == "gap"]
    assert len(gaps) == 1, gaps  # what the kernel held got through; the rest waited here
    assert gaps[0]["last"] == last - 20_000  # up to the oldest item retained when read
    covered = [i["seq"] for i in items if i["kind"] != "gap"]
    covered += range(gaps[0]["first"], gaps[0]["last"] + 1)
    assert sorted(covered) == list(range(1, last + 1))  # every seq once: delivered, or gap
    seqs = [i.get("seq", i.get("first")) for i in items]
    assert seqs == sorted(seqs)


def read_until(peer: Peer, stream: int, last: int) -> list[dict[str, Any]]:
    """Items of ``stream`` up to the one with seq ``last`` (fails at Peer's socket timeout)."""
    items: list[dict[str, Any]] = []
    while not items or items[-1].get("seq") != last:
        items.append(peer.wait(lambda f: f.get("id") == stream)["data"])
    return items


def test_a_reader_that_drops_mid_backlog_resumes_with_since(peers: Any) -> None:
    poster = peers(name("poster"))
    room = name("r")
    data(poster.request("channel.join", {"channel": room}))
    last = send_many(poster, room, 2000, "z" * 200)
    reader_name = name("reader")
    reader = peers()
    login = data(reader.request("login", {"username": reader_name}))
    reader.send(
        {"type": "stream", "id": 2, "route": "messages",
         "data": {"since": {room: 0}, "epoch": login["epoch"]}}
    )  # fmt: skip
    join = data(reader.request("channel.join", {"channel": room}))["seq"]
    first_part = reader.items(2, 700)
    reader.close()  # mid-backlog; the session lingers
    again = peers()
    resumed = data(again.request("login", {"username": reader_name, "resume": login["session_id"]}))
    assert resumed["resumed"] is True
    position = first_part[-1]["seq"]
    again.send(
        {"type": "stream", "id": 2, "route": "messages",
         "data": {"since": {room: position}, "epoch": login["epoch"]}}
    )  # fmt: skip
    rest = again.items(2, join - position)
    assert [i["seq"] for i in first_part + rest] == list(range(1, last + 2))
    assert data(again.request("logout")) == {}
