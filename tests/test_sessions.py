"""Sessions (PROTOCOL.md 1.1): attach, linger, resume, logout, exactly-once sending, read positions.

Through the real connection and service on a Clock (tests/producer_harness.py), so a linger
time passes in a line; the same rules over real sockets on every store are walked by the
contract tool (tests/test_plugin.py) and the model test (tests/test_model.py).
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred
from zope.interface import implementer

from chat.auth import issue_token
from chat.stores.interface import IPresence
from chat.stores.memory import MemoryLogStore
from chat.stores.presence import LocalPresence
from tests.producer_harness import Conn, Harness

SECRET = b"0123456789abcdef-sessions-secret"


def data(answer: dict[str, Any]) -> Any:
    assert answer["type"] == "response", answer
    return answer["data"]


def code(answer: dict[str, Any]) -> str:
    assert answer["type"] == "error", answer
    assert answer["error"]["message"]
    return str(answer["error"]["code"])


def login(conn: Conn, username: str, **fields: Any) -> dict[str, Any]:
    return conn.request("login", {"username": username, **fields})


def kinds(items: list[dict[str, Any]], who: str) -> list[str]:
    """The join/leave items of ``who``."""
    return [i["kind"] for i in items if i.get("from") == who and i["kind"] in ("join", "leave")]


# --- attach -------------------------------------------------------------------------------


def test_a_login_with_resume_attaches_to_the_live_session_and_appends_nothing() -> None:
    harness = Harness()
    bob = harness.connect("bob")
    bob.open_feed()
    bob.join("room")
    first = harness.connect()
    answer = data(login(first, "alice"))
    assert answer["resumed"] is False and len(answer["session_id"]) == 32
    first.join("room")
    second = harness.connect()
    attached = data(login(second, "alice", resume=answer["session_id"]))
    assert attached == {**answer, "resumed": True}
    assert data(second.request("message", {"channel": "room", "content": "from tab 2"}))
    assert kinds(bob.items(1), "alice") == ["join"]  # one join, no leave, no second join
    assert harness.service.statistics(["users", "connections"]) == {
        "user_count": 2,
        "connection_count": 3,
    }


def test_attached_connections_share_memberships_both_ways() -> None:
    harness = Harness()
    one = harness.connect()
    sid = data(login(one, "alice"))["session_id"]
    two = harness.connect()
    data(login(two, "alice", resume=sid))
    one.open_feed(1)
    two.open_feed(1)
    two.join("b")  # a join on the second connection...
    harness.post("b", "for both")
    for conn in (one, two):  # ...makes every feed of the session follow the channel
        assert [i.get("content") for i in conn.items(1) if i["channel"] == "b"] == [
            None,
            "for both",
        ]
    one.leave("b")
    harness.post("b", "after the leave")
    for conn in (one, two):
        assert [i["kind"] for i in conn.items(1) if i["channel"] == "b"] == [
            "join",
            "message",
            "leave",
        ]


def test_a_bogus_or_foreign_resume_on_a_live_name_is_taken_and_on_a_fresh_name_starts_anew() -> (
    None
):
    harness = Harness()
    sid = data(login(harness.connect(), "alice"))["session_id"]
    data(login(harness.connect(), "bob"))
    assert code(login(harness.connect(), "alice", resume="0" * 32)) == "username_taken"
    assert code(login(harness.connect(), "bob", resume=sid)) == "username_taken"
    fresh = data(login(harness.connect(), "carol", resume=sid))
    assert fresh["resumed"] is False and fresh["session_id"] != sid


def test_at_most_sixteen_connections_attach_to_one_session() -> None:
    harness = Harness()
    sid = data(login(harness.connect(), "alice"))["session_id"]
    for _ in range(15):
        assert data(login(harness.connect(), "alice", resume=sid))["resumed"] is True
    assert code(login(harness.connect(), "alice", resume=sid)) == "rate_limited"


def test_a_valid_token_attaches_to_the_users_live_session() -> None:
    harness = Harness(auth="token", secret=SECRET)
    token = issue_token(SECRET, "j.doe", 60)
    first = data(login(harness.connect(), "j.doe", token=token))
    again = data(login(harness.connect(), "j.doe", token=token))
    assert again["resumed"] is True and again["session_id"] == first["session_id"]


# --- linger -------------------------------------------------------------------------------


def test_a_session_lingers_after_its_last_connection_then_ends() -> None:
    harness = Harness(session_linger=120)
    bob = harness.connect("bob")
    bob.open_feed()
    bob.join("room")
    alice = harness.connect()
    sid = data(login(alice, "alice"))["session_id"]
    alice.join("room")
    alice.connection.connection_lost()
    assert harness.presence.is_online("alice") is False
    assert harness.service.statistics(["users", "connections"]) == {
        "user_count": 2,
        "connection_count": 1,
    }
    assert code(login(harness.connect(), "alice")) == "username_taken"  # the name is held
    bob.open(5, "channel.users", {"channel": "room"})
    harness.settle()
    assert bob.items(5) == [
        {"username": "alice", "online": False},
        {"username": "bob", "online": True},
    ]
    harness.advance(119)
    assert kinds(bob.items(1), "alice") == ["join"]  # nobody saw alice leave yet
    back = harness.connect()
    assert data(login(back, "alice", resume=sid))["resumed"] is True
    back.connection.connection_lost()
    harness.advance(120)  # the linger restarts at the last close; now it ends
    assert kinds(bob.items(1), "alice") == ["join", "leave"]
    assert data(login(harness.connect(), "alice"))["resumed"] is False


def test_a_resumed_session_opens_its_feed_with_since_and_gets_what_it_missed() -> None:
    harness = Harness()
    alice = harness.connect()
    answer = data(login(alice, "alice"))
    alice.open_feed()
    seen = alice.join("room")
    alice.connection.connection_lost()
    for n in range(5):
        harness.post("room", f"missed {n}")
    harness.private("alice", "while away")
    back = harness.connect()
    data(login(back, "alice", resume=answer["session_id"]))
    back.open_feed(1, since={"room": seen, "@": 0})
    harness.settle()
    items = back.items(1)
    assert [i["content"] for i in items if i["channel"] == "room"] == [
        f"missed {n}" for n in range(5)
    ]
    assert [i["content"] for i in items if i["channel"] is None] == ["while away"]


def test_with_linger_zero_a_session_ends_with_its_connection() -> None:
    harness = Harness(session_linger=0)
    bob = harness.connect("bob")
    bob.open_feed()
    bob.join("room")
    alice = harness.connect("alice")
    alice.join("room")
    alice.connection.connection_lost()
    harness.settle()
    assert kinds(bob.items(1), "alice") == ["join", "leave"]
    assert data(login(harness.connect(), "alice"))["resumed"] is False


def test_a_connection_that_closes_while_its_login_is_claimed_ends_the_session() -> None:
    presence = SlowClaims()
    harness = Harness()
    harness.service.presence = presence
    conn = harness.connect()
    conn.client(type="request", id=1, route="login", data={"username": "alice"})
    harness.settle()
    conn.connection.connection_lost()  # the claim is still in flight
    presence.answer(True)
    harness.settle()
    assert "alice" not in harness.service.sessions
    again = harness.connect()
    again.client(type="request", id=1, route="login", data={"username": "alice"})
    presence.answer(True)
    harness.settle()
    assert data(again.frames(1)[0])["resumed"] is False


# --- logout -------------------------------------------------------------------------------


def test_logout_of_the_last_connection_ends_the_session_at_once() -> None:
    harness = Harness()
    bob = harness.connect("bob")
    bob.open_feed()
    bob.join("room")
    alice = harness.connect("alice")
    alice.open_feed(1)
    alice.join("room")
    assert data(alice.request("logout")) == {}
    assert kinds(bob.items(1), "alice") == ["join", "leave"]
    assert alice.frames(1)[-1]["error"]["code"] == "unauthenticated"  # its feed ended
    assert code(alice.request("channel.join", {"channel": "room"})) == "unauthenticated"
    assert data(login(alice, "alice2"))["resumed"] is False  # it may log in again


def test_logout_of_one_of_several_connections_keeps_the_session() -> None:
    harness = Harness()
    bob = harness.connect("bob")
    bob.open_feed()
    bob.join("room")
    one = harness.connect()
    sid = data(login(one, "alice"))["session_id"]
    one.join("room")
    two = harness.connect()
    data(login(two, "alice", resume=sid))
    assert data(two.request("logout")) == {}
    assert kinds(bob.items(1), "alice") == ["join"]
    assert data(one.request("message", {"channel": "room", "content": "still here"}))


def test_logout_then_login_in_one_write_takes_effect_in_order() -> None:
    harness = Harness()
    conn = harness.connect("alice")
    conn.client(type="request", id=1, route="logout")
    conn.client(type="request", id=2, route="login", data={"username": "alice"})
    harness.settle()
    assert data(conn.frames(1)[0]) == {}
    assert data(conn.frames(2)[0])["resumed"] is False


# --- exactly-once sending -----------------------------------------------------------------


def test_the_same_client_id_is_stored_once_and_answered_with_the_original() -> None:
    harness = Harness()
    conn = harness.connect("alice")
    conn.join("room")
    frame = {"channel": "room", "content": "once", "client_id": "c:1"}
    first = data(conn.request("message", frame))
    again = data(conn.request("message", frame))
    assert first["duplicate"] is False
    assert again == {**first, "duplicate": True}
    assert harness.store.last_seq("#room") == first["seq"]
    stored = harness.store.cached("#room", first["seq"] - 1, 1)[0].payload
    assert b'"client_id":"c:1"' in stored
    other = data(conn.request("message", {**frame, "client_id": "c:2"}))
    assert other["seq"] == first["seq"] + 1


def test_a_retry_is_a_duplicate_from_another_connection_and_from_a_new_session() -> None:
    harness = Harness()
    data(login(harness.connect(), "bob"))
    one = harness.connect()
    sid = data(login(one, "alice"))["session_id"]
    dm = {"user": "bob", "content": "psst", "client_id": "dm-1"}
    first = data(one.request("message", dm))
    two = harness.connect()
    data(login(two, "alice", resume=sid))
    assert data(two.request("message", dm)) == {**first, "duplicate": True}
    for conn in (one, two):
        assert data(conn.request("logout")) == {}
    three = harness.connect("alice")
    assert data(three.request("message", dm)) == {**first, "duplicate": True}
    assert harness.store.last_seq("@bob") == 1 and harness.store.last_seq("@alice") == 1


def test_a_pipelined_retry_of_a_message_not_yet_stored_is_a_duplicate() -> None:
    harness = Harness()
    conn = harness.connect("alice")
    conn.join("room")
    for fid in (1, 2):
        conn.client(
            type="request",
            id=fid,
            route="message",
            data={"channel": "room", "content": "x", "client_id": "same"},
        )
    harness.settle()
    first, second = data(conn.frames(1)[0]), data(conn.frames(2)[0])
    assert second == {**first, "duplicate": True}


@pytest.mark.parametrize("client_id", ["", "x" * 65, "has space", "é", 7, ["a"]])
def test_an_invalid_client_id_is_invalid_data(client_id: Any) -> None:
    harness = Harness()
    conn = harness.connect("alice")
    conn.join("room")
    answer = conn.request("message", {"channel": "room", "content": "x", "client_id": client_id})
    assert code(answer) == "invalid_data" and "client_id" in answer["error"]["message"]


def test_a_client_id_is_remembered_for_the_dedup_window_only() -> None:
    now = [1_000_000]
    harness = Harness(store=MemoryLogStore(clock_ms=lambda: now[0], dedup_window=300))
    conn = harness.connect("alice")
    conn.join("room")
    frame = {"channel": "room", "content": "x", "client_id": "w"}
    first = data(conn.request("message", frame))
    now[0] += 299_000
    assert data(conn.request("message", frame))["duplicate"] is True
    now[0] += 2_000
    later = data(conn.request("message", frame))
    assert later["duplicate"] is False and later["seq"] == first["seq"] + 1


# --- private messages and read positions ------------------------------------------------


def test_history_with_user_pages_one_conversation_of_the_inbox() -> None:
    harness = Harness()
    for name in ("bob", "carol"):
        data(login(harness.connect(), name))
    alice = harness.connect("alice")
    bob = harness.connect()
    data(login(bob, "bob", resume=harness.service.sessions["bob"].session_id))
    for n in range(30):
        data(alice.request("message", {"user": "bob", "content": f"a{n}"}))
        data(bob.request("message", {"user": "alice", "content": f"b{n}"}))
        harness.private("alice", f"c{n}", sender="carol")
    alice.open(7, "history", {"user": "bob", "limit": 5})
    harness.settle()
    assert [i["content"] for i in alice.items(7)] == ["a27", "b27", "a28", "b28", "a29", "b29"][1:]
    alice.open(8, "history", {"user": "bob", "limit": 3, "after": 0})
    harness.settle()
    assert [i["content"] for i in alice.items(8)] == ["a0", "b0", "a1"]
    alice.open(9, "history", {"user": "alice"})  # one's own notes: none here
    harness.settle()
    assert alice.items(9) == []


def test_conversations_count_messages_by_others_after_the_read_position() -> None:
    harness = Harness()
    bob = harness.connect("bob")
    alice = harness.connect("alice")
    for channel in ("b", "a"):
        alice.join(channel)
        bob.join(channel)
    first = data(bob.request("message", {"channel": "a", "content": "1"}))["seq"]
    data(bob.request("message", {"channel": "a", "content": "2"}))
    data(alice.request("message", {"channel": "a", "content": "mine"}))
    data(bob.request("message", {"user": "alice", "content": "dm"}))
    assert data(alice.request("read", {"channel": "a", "seq": first})) == {
        "channel": "a",
        "seq": first,
    }
    assert data(alice.request("read", {"channel": "a", "seq": 1}))["seq"] == first  # never back
    assert data(alice.request("read", {"channel": None, "seq": 99}))["seq"] == 1  # clamped
    assert code(alice.request("read", {"channel": "nope", "seq": 1})) == "forbidden"
    alice.open(4, "conversations")
    harness.settle()
    rows = alice.items(4)
    assert rows == [
        {"channel": "a", "last_seq": 5, "read_seq": first, "unread": 1},
        {"channel": "b", "last_seq": 2, "read_seq": 0, "unread": 0},
        {"channel": None, "last_seq": 1, "read_seq": 1, "unread": 0},
    ]
    assert alice.frames(4)[-1] == {"type": "complete", "id": 4}


def test_unread_counts_only_retained_items() -> None:
    harness = Harness()
    harness.store.init_logs(5, 5)
    alice = harness.connect("alice")
    harness.connect("bob")
    for _ in range(12):
        harness.private("alice", "x")
    alice.open(4, "conversations")
    harness.settle()
    assert alice.items(4) == [{"channel": None, "last_seq": 12, "read_seq": 0, "unread": 5}]


@implementer(IPresence)
class SlowClaims(LocalPresence):
    """Claims answered when the test says (as over Redis, a round trip)."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting: list[tuple[Deferred[bool], str, str]] = []

    def claim(self, username: str, session_id: str) -> Deferred[bool]:
        d: Deferred[bool] = Deferred()
        self.waiting.append((d, username, session_id))
        return d

    def answer(self, ok: bool) -> None:
        waiting, self.waiting = self.waiting, []
        for d, username, session_id in waiting:
            if ok:
                super().claim(username, session_id)
            d.callback(ok)


def test_requests_pipelined_behind_a_slow_claim_wait_for_it() -> None:
    presence = SlowClaims()
    harness = Harness()
    harness.service.presence = presence
    conn = harness.connect()
    conn.client(type="request", id=1, route="login", data={"username": "alice"})
    conn.client(type="request", id=2, route="channel.join", data={"channel": "room"})
    conn.client(type="request", id=3, route="message", data={"channel": "room", "content": "x"})
    harness.settle()
    assert conn.frames() == [] and not conn.reading  # held: nothing read past the login
    presence.answer(True)
    harness.settle()
    assert [f["type"] for f in conn.frames()] == ["response"] * 3
    assert conn.reading


def test_a_token_login_waits_for_a_claim_in_flight_then_attaches() -> None:
    presence = SlowClaims()
    harness = Harness(auth="token", secret=SECRET)
    harness.service.presence = presence
    token = issue_token(SECRET, "alice", 60)
    one, two = harness.connect(), harness.connect()
    one.client(type="request", id=1, route="login", data={"username": "alice", "token": token})
    two.client(type="request", id=1, route="login", data={"username": "alice", "token": token})
    harness.settle()
    presence.answer(True)
    harness.settle()
    first, second = data(one.frames(1)[0]), data(two.frames(1)[0])
    assert (first["resumed"], second["resumed"]) == (False, True)
    assert first["session_id"] == second["session_id"]


def test_logins_wait_until_the_backend_can_serve() -> None:
    harness = Harness()
    started: Deferred[None] = Deferred()
    harness.service.serve_when(started)
    conn = harness.connect()
    conn.client(type="request", id=1, route="login", data={"username": "alice"})
    conn.client(type="request", id=2, route="channel.join", data={"channel": "room"})
    harness.settle()
    assert conn.frames() == []  # held: the store has not loaded yet
    started.callback(None)
    harness.settle()
    assert [f["type"] for f in conn.frames()] == ["response", "response"]


def test_logins_wait_for_the_whole_start_even_when_it_began_at_once() -> None:
    from twisted.internet.defer import succeed

    harness = Harness()
    inner: Deferred[None] = Deferred()
    harness.service.serve_when(succeed(None).addCallback(lambda _: inner))  # called, paused
    conn = harness.connect()
    conn.client(type="request", id=1, route="login", data={"username": "alice"})
    harness.settle()
    assert conn.frames() == []
    inner.callback(None)
    harness.settle()
    assert conn.frames(1)[0]["type"] == "response"
