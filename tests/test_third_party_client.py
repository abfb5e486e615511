"""The server as users run it (``twistd -n chat``), spoken to by a client the project did not
write: ``websocket-client``. Every route, every error code a client can provoke, close codes."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import websocket

from tests.helpers import twistd_server
from tests.peer import Peer

TIMEOUT = 10


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with twistd_server("--store", "memory", "--max-frame-size", "65536") as (_, port):
        yield f"ws://127.0.0.1:{port}/ws"


@pytest.fixture
def peers(url: str) -> Iterator[Any]:
    opened: list[Peer] = []

    def open_peer(username: str | None = None, **options: Any) -> Peer:
        peer = Peer(url, **options)
        opened.append(peer)
        if username:
            answer = peer.request(1, "login", {"username": username})
            assert answer["type"] == "response", answer
        return peer

    yield open_peer
    for peer in opened:
        peer.close()


def error_code(frame: dict[str, Any]) -> str:
    assert frame["type"] == "error", frame
    assert frame["error"]["message"]
    return str(frame["error"]["code"])


def test_subprotocol_is_accepted_when_offered_and_optional(url: str) -> None:
    offered = websocket.create_connection(url, timeout=TIMEOUT, subprotocols=["chat.v1.json"])
    assert offered.getsubprotocol() == "chat.v1.json"
    offered.close()
    plain = websocket.create_connection(url, timeout=TIMEOUT)
    assert plain.getsubprotocol() is None
    plain.close()


def test_page_is_served_at_root(url: str) -> None:
    http = url.replace("ws://", "http://").removesuffix("/ws") + "/"
    with urllib.request.urlopen(http, timeout=TIMEOUT) as response:
        assert response.status == 200
        assert b"<html" in response.read()


def test_conversation_through_every_route(peers: Any) -> None:
    alice, bob = peers("tp_alice"), peers("tp_bob")
    alice.send({"type": "stream", "id": 2, "route": "messages"})
    bob.send({"type": "stream", "id": 2, "route": "messages"})
    assert alice.request(3, "channel.join", {"channel": "tp_room"})["data"]["seq"] == 1
    assert bob.request(3, "channel.join", {"channel": "tp_room"})["data"]["users"] == 2
    ack = alice.request(4, "message", {"channel": "tp_room", "content": "hello"})["data"]
    assert ack["seq"] == 3
    item = bob.wait(lambda f: f.get("id") == 2 and f["data"].get("kind") == "message")
    assert item["data"]["content"] == "hello" and item["data"]["seq"] == 3
    ack = bob.request(5, "message", {"user": "tp_alice", "content": "psst"})["data"]
    assert ack["channel"] is None
    item = alice.wait(lambda f: f.get("id") == 2 and f["data"].get("channel") is None)
    assert item["data"]["to"] == "tp_alice"
    assert {"channel": "tp_room", "users": 2} in alice.collect(6, "channels")
    assert alice.collect(7, "channel.users", {"channel": "tp_room"}) == [
        {"username": "tp_alice", "online": True},
        {"username": "tp_bob", "online": True},
    ]
    assert [i["seq"] for i in alice.collect(8, "history", {"channel": "tp_room"})] == [1, 2, 3]
    assert [i["content"] for i in alice.collect(9, "history")] == ["psst"]
    assert [i["content"] for i in bob.collect(9, "history")] == ["psst"]  # [1.1] its own copy
    alice.send({"type": "fire", "route": "statistics", "data": {"memory_usage": 1000}})
    alice.send(
        {
            "type": "channel",
            "id": 10,
            "route": "statistics",
            "data": {"ids": ["users", "connections"], "period_seconds": 60},
        }
    )
    stats = alice.wait(lambda f: f.get("id") == 10)["data"]
    assert set(stats) == {"user_count", "connection_count"} and stats["user_count"] >= 2
    alice.send({"type": "next", "id": 10, "data": {"ids": ["messages"]}})
    changed = alice.wait(lambda f: f.get("id") == 10)["data"]
    assert set(changed) == {"message_count"}
    alice.send({"type": "cancel", "id": 10})
    assert bob.request(11, "channel.leave", {"channel": "tp_room"})["data"] == {
        "channel": "tp_room"
    }
    item = alice.wait(lambda f: f.get("id") == 2 and f["data"].get("kind") == "leave")
    assert item["data"]["seq"] == 4


def test_credit_and_request_n(peers: Any) -> None:
    alice = peers("tp_credit")
    alice.request(2, "channel.join", {"channel": "tp_credit"})
    for i in range(3, 8):
        alice.request(i, "message", {"channel": "tp_credit", "content": f"m{i}"})
    alice.send(
        {
            "type": "stream",
            "id": 20,
            "route": "history",
            "data": {"channel": "tp_credit"},
            "credit": 2,
        }
    )
    first = [alice.wait(lambda f: f.get("id") == 20) for _ in range(2)]
    assert [f["data"]["seq"] for f in first] == [1, 2]
    marker = alice.request(21, "channels")  # a round trip: nothing more came on id 20
    assert error_code(marker) == "unknown_route"
    assert not [f for f in alice.inbox if f.get("id") == 20]
    alice.send({"type": "request_n", "id": 20, "n": 10})
    rest = []
    while True:
        frame = alice.wait(lambda f: f.get("id") == 20)
        if frame["type"] == "complete":
            break
        rest.append(frame["data"]["seq"])
    assert rest == [3, 4, 5, 6]


@pytest.mark.parametrize(
    ("frame", "expected_id"),
    [
        ("{nope", None),
        ("[1]", None),
        ('{"type":"request"}', None),
        ('{"type":"bogus","id":3}', 3),
        ('{"type":"request","id":0,"route":"x"}', None),
        ('{"type":"request","id":4}', 4),
        ('{"type":"stream","id":5,"route":"x","credit":0}', 5),
        ('{"type":"request_n","id":6,"n":-1}', 6),
        ('{"type":"response","id":7,"data":1}', 7),
        ('{"type":"request","id":NaN,"route":"x"}', None),
    ],
)
def test_bad_frames_get_bad_frame_and_the_connection_stays(
    peers: Any, frame: str, expected_id: int | None
) -> None:
    peer = peers()
    peer.send(frame)
    answer = peer.wait(lambda f: True)
    assert error_code(answer) == "bad_frame" and answer["id"] == expected_id
    assert peer.request(9, "login", {"username": "tp_after_bad"})["type"] == "response"
    assert peer.request(10, "logout")["data"] == {}  # frees the username for the next one
    peer.close()


def test_every_error_code_a_client_can_provoke(peers: Any) -> None:
    alice = peers("tp_errs")
    anonymous = peers()
    assert error_code(anonymous.request(2, "channel.join", {"channel": "x"})) == "unauthenticated"
    assert error_code(alice.request(3, "no.such.route")) == "unknown_route"
    assert error_code(alice.request(4, "channel.join", {"channel": "bad name"})) == "invalid_data"
    assert error_code(peers().request(5, "login", {"username": "tp_errs"})) == "username_taken"
    assert error_code(alice.request(6, "message", {"user": "tp_nobody", "content": "x"})) == (
        "not_found"
    )
    assert error_code(alice.request(7, "message", {"channel": "tp_zz", "content": "x"})) == (
        "forbidden"
    )
    alice.send({"type": "stream", "id": 8, "route": "messages"})
    assert error_code(alice.request(8, "channels")) == "duplicate_id"
    for i in range(100, 163):  # 63 more: 64 open
        alice.send({"type": "stream", "id": i, "route": "messages"})
    assert error_code(alice.request(200, "channel.join", {"channel": "x"})) == "rate_limited"


def test_binary_message_closes_with_1003(peers: Any) -> None:
    peer = peers()
    peer.ws.send_binary(b"\x00\x01")
    assert peer.close_code() == 1003


def test_invalid_utf8_closes_with_1007(peers: Any) -> None:
    peer = peers()
    peer.ws.send(b'{"type":"fire","route":"\xff"}', opcode=websocket.ABNF.OPCODE_TEXT)
    assert peer.close_code() == 1007


def test_frame_over_the_limit_closes_with_1009(peers: Any) -> None:
    peer = peers()
    peer.send(json.dumps({"type": "fire", "route": "x", "data": "y" * 70000}))
    assert peer.close_code() == 1009


def test_a_hundred_bad_frames_in_a_row_close_with_1008(peers: Any) -> None:
    peer = peers()
    for _ in range(100):
        peer.send("not json")
    assert peer.close_code() == 1008
