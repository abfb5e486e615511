"""A close really closes: once the server decides to close a connection it processes nothing
more from it, it writes every frame it queued before the close frame, and nothing after it.

First through the real connection on a Clock (tests/producer_harness.py), where the fake
transport records frames written after a close frame; then as users run it, over a socket,
with a client the project did not write.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import websocket
from twisted.internet.defer import Deferred

from chat.auth import issue_token
from chat.protocol.closes import BINARY_MESSAGE, CloseCode
from chat.stores.interface import Appended, Dedup
from chat.stores.memory import MemoryLogStore
from tests.helpers import twistd_server
from tests.peer import Peer, code, data
from tests.producer_harness import Harness

SECRET = b"0123456789abcdef-closing-secret"


class HeldAppends(MemoryLogStore):
    """Appends are stored at once but answered only when the test says (a slow disk)."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[tuple[Deferred[Appended], Appended]] = []

    def append(
        self,
        log: str,
        fields: Mapping[str, Any],
        copy_to: str | None = None,
        dedup: Dedup | None = None,
    ) -> Deferred[Appended]:
        result: list[Appended] = []
        super().append(log, fields, copy_to, dedup).addCallback(result.append)
        d: Deferred[Appended] = Deferred()
        self.held.append((d, result[0]))
        return d

    def answer_all(self) -> None:
        held, self.held = self.held, []
        for d, appended in held:
            d.callback(appended)


def test_frames_after_the_close_decision_are_not_processed() -> None:
    harness = Harness()
    conn = harness.connect()
    conn.connection.close(BINARY_MESSAGE)
    conn.client(type="request", id=1, route="login", data={"username": "alice"})
    harness.settle()
    assert conn.frames() == [] and conn.transport.closes == [BINARY_MESSAGE]
    assert "alice" not in harness.service.sessions


def test_what_was_queued_before_the_close_is_written_before_the_close_frame() -> None:
    harness = Harness()
    conn = harness.connect("alice")
    conn.join("room")
    conn.client(type="request", id=7, route="message", data={"channel": "room", "content": "x"})
    conn.connection.close(BINARY_MESSAGE)  # in the same turn: the response is still queued
    harness.settle()
    assert [f["id"] for f in conn.frames(7)] == [7]
    assert conn.transport.closes == [BINARY_MESSAGE]
    assert conn.transport.after_close == []


def test_an_answer_that_comes_after_the_close_is_never_written() -> None:
    store = HeldAppends()
    harness = Harness(store=store)
    conn = harness.connect("alice")
    conn.client(type="request", id=3, route="channel.join", data={"channel": "room"})
    harness.settle()
    conn.connection.close(BINARY_MESSAGE)
    store.answer_all()
    harness.settle()
    assert conn.frames(3) == [] and conn.transport.after_close == []


def test_too_many_failed_logins_answer_the_last_one_then_close() -> None:
    harness = Harness(auth="token", secret=SECRET, max_auth_failures=5)
    conn = harness.connect()
    for n in range(40):
        conn.client(
            type="request", id=n + 1, route="login", data={"username": "alice", "token": "v2.x.y.z"}
        )
    harness.settle()
    answers = [f for f in conn.frames() if f["type"] == "error"]
    assert [a["id"] for a in answers] == [1, 2, 3, 4, 5]
    assert {a["error"]["code"] for a in answers} == {"unauthenticated"}
    assert [c.code for c in conn.transport.closes] == [CloseCode.POLICY_VIOLATION]
    assert conn.transport.after_close == []


def test_bad_frames_past_the_limit_close_and_nothing_after_is_answered() -> None:
    harness = Harness()
    conn = harness.connect()
    for _ in range(150):
        conn.raw("{not json")
    conn.client(type="request", id=1, route="login", data={"username": "alice"})
    harness.settle()
    assert len(conn.frames()) == 99  # the 100th closes instead of answering
    assert [c.code for c in conn.transport.closes] == [CloseCode.POLICY_VIOLATION]
    assert "alice" not in harness.service.sessions


def test_the_login_timeout_closes_and_then_nothing_is_processed() -> None:
    harness = Harness(login_timeout=5)
    conn = harness.connect()
    harness.advance(5)
    assert [c.code for c in conn.transport.closes] == [CloseCode.POLICY_VIOLATION]
    conn.client(type="request", id=1, route="login", data={"username": "alice"})
    harness.settle()
    assert conn.frames() == [] and conn.transport.after_close == []


# --- over a socket, as users run it ----------------------------------------------------


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    secret_options = ["--store", "memory"]
    with twistd_server(*secret_options) as (_, port):
        yield f"ws://127.0.0.1:{port}/ws"


def frames_until_close(peer: Peer) -> tuple[list[dict[str, Any]], int | None, list[bytes]]:
    """Every text frame before the close frame, its code, and anything that came after."""
    before: list[dict[str, Any]] = []
    while True:
        opcode, payload = peer.ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            close = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
            break
        if opcode == websocket.ABNF.OPCODE_TEXT:
            before.append(json.loads(payload))
    after: list[bytes] = []
    peer.ws.sock.settimeout(1)
    try:
        while chunk := peer.ws.sock.recv(65536):
            after.append(chunk)
    except (TimeoutError, OSError):
        pass
    return before, close, after


def binary_frame() -> bytes:
    return websocket.ABNF.create_frame(b"\x00\x01", websocket.ABNF.OPCODE_BINARY).format()


def test_a_login_sent_after_a_binary_frame_takes_no_effect(url: str) -> None:
    peer = Peer(url)
    login = websocket.ABNF.create_frame(
        json.dumps({"type": "request", "id": 1, "route": "login", "data": {"username": "bin1"}}),
        websocket.ABNF.OPCODE_TEXT,
    ).format()
    peer.ws.sock.sendall(binary_frame() + login)
    before, close, after = frames_until_close(peer)
    assert before == [] and close == 1003 and after == []
    other = Peer(url)
    assert data(other.request("login", {"username": "bin1"}))["username"] == "bin1"
    other.close()


def test_the_answer_queued_before_a_close_comes_before_the_close_frame(url: str) -> None:
    peer = Peer(url)
    data(peer.request("login", {"username": "queued1"}))
    data(peer.request("channel.join", {"channel": "queued"}))
    message = peer.request_frame("message", {"channel": "queued", "content": "acked?"})
    wire = websocket.ABNF.create_frame(json.dumps(message), websocket.ABNF.OPCODE_TEXT).format()
    peer.ws.sock.sendall(wire + binary_frame())
    before, close, after = frames_until_close(peer)
    assert [f["id"] for f in before if f.get("id") == message["id"]] == [message["id"]]
    assert close == 1003 and after == []


def test_token_guesses_after_the_limit_are_not_answered(tmp_path: Any) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    with twistd_server("--store", "memory", "--auth", "token", "--secret-file", str(secret)) as (
        _,
        port,
    ):
        peer = Peer(f"ws://127.0.0.1:{port}/ws")
        guesses = [
            peer.request_frame("login", {"username": "guess", "token": f"v2.Z3Vlc3M.9.{n}"})
            for n in range(500)
        ]
        peer.pipelined(guesses)
        before, close, after = frames_until_close(peer)
        assert [f["id"] for f in before] == [g["id"] for g in guesses[:5]]
        assert all(code(f) == "unauthenticated" for f in before)
        assert close == 1008 and after == []
        good = Peer(f"ws://127.0.0.1:{port}/ws")
        token = issue_token(SECRET, "guess", 60)
        assert data(good.request("login", {"username": "guess", "token": token}))
        good.close()
