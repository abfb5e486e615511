"""The client library's protocol 1.1 API over real sockets: sessions, client_id, read positions.

Most tests use the in-process server of ``conftest`` (the memory store, sessions lingering
120 s as by default); the ones that must stop the server between a request and its answer run
``twistd`` as a subprocess and pause it with SIGSTOP.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol

from chat.client import (
    ChatError,
    ConnectionLost,
    Observer,
    ReconnectingClient,
    SendInterrupted,
    connect,
    new_client_id,
)
from tests.helpers import twistd_server, until, within

ensure = pytest_twisted.ensureDeferred
CLIENT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


async def failure_of(d: Any, kind: type[BaseException]) -> Any:
    """The exception ``d`` fails with, which must be a ``kind``."""
    try:
        result = await within(d)
    except kind as error:
        return error
    raise AssertionError(f"expected {kind.__name__}, got the result {result!r}")


def messages_of(items: list[dict[str, Any]]) -> list[str]:
    return [item["content"] for item in items if item["kind"] == "message"]


# Sessions


@pytest.mark.timeout(30)
@ensure
async def test_login_remembers_the_session_and_resume_attaches_a_second_connection(
    server: Any, client_factory: Any
) -> None:
    first = await client_factory()
    answer = await within(first.login("alice"))
    assert answer["resumed"] is False
    assert (first.username, first.session_id, first.epoch) == (
        "alice",
        answer["session_id"],
        answer["epoch"],
    )
    assert first.resumed is False
    await within(first.join("room"))

    second = await client_factory()
    attached = await within(second.login("alice", resume=first.session_id))
    assert attached["resumed"] is True and second.resumed is True
    assert second.session_id == first.session_id
    # The session's memberships are shared: the second connection may post without joining.
    sent = await within(second.send("room", "from the second tab"))
    assert sent["duplicate"] is False

    stranger = await client_factory()
    refused = await failure_of(stranger.login("alice"), ChatError)
    assert refused.code == "username_taken"


@pytest.mark.timeout(30)
@ensure
async def test_a_resume_of_an_ended_session_is_a_new_one(client_factory: Any) -> None:
    old = await client_factory("bob")
    session_id = old.session_id
    await within(old.logout())
    assert (old.logged_out, old.session_id, old.username) == (True, None, None)
    again = await client_factory()
    answer = await within(again.login("bob", resume=session_id))
    assert answer["resumed"] is False and again.session_id != session_id


@pytest.mark.timeout(30)
@ensure
async def test_logout_frees_the_name_at_once_where_a_close_lets_it_linger(
    client_factory: Any,
) -> None:
    closed = await client_factory("carol")
    await within(closed.close())
    refused = await failure_of((await client_factory()).login("carol"), ChatError)
    assert refused.code == "username_taken"  # the session lingers after a mere close

    done = await client_factory("dave")
    await within(done.logout())
    await within(done.close())
    fresh = await client_factory()
    assert (await within(fresh.login("dave")))["resumed"] is False


@pytest.mark.timeout(30)
@ensure
async def test_members_say_who_is_online_and_users_keeps_its_shape(
    client_factory: Any,
) -> None:
    erin = await client_factory("erin")
    frank = await client_factory("frank")
    await within(erin.join("porch"))
    await within(frank.join("porch"))
    await within(frank.close())  # frank's session lingers, with no connection
    assert await within(erin.users("porch")) == ["erin", "frank"]

    async def frank_offline() -> bool:
        members = await within(erin.members("porch"))
        return members == [
            {"username": "erin", "online": True},
            {"username": "frank", "online": False},
        ]

    deadline = time.monotonic() + 10
    while not await frank_offline():  # the server sees the close a moment later
        assert time.monotonic() < deadline, await within(erin.members("porch"))


# Messages with client_id


@pytest.mark.timeout(30)
@ensure
async def test_send_gives_each_message_a_new_client_id_and_a_retry_is_a_duplicate(
    client_factory: Any,
) -> None:
    gina = await client_factory("gina")
    await within(gina.join("ids"))
    one = await within(gina.send("ids", "one"))
    two = await within(gina.send("ids", "two"))
    assert CLIENT_ID.fullmatch(one["client_id"]) and CLIENT_ID.fullmatch(two["client_id"])
    assert one["client_id"] != two["client_id"]
    assert (one["duplicate"], two["duplicate"]) == (False, False)

    retry = await within(gina.send("ids", "one", client_id=one["client_id"]))
    assert (retry["duplicate"], retry["seq"], retry["ts"]) == (True, one["seq"], one["ts"])
    assert messages_of(await within(gina.history("ids"))) == ["one", "two"]
    assert gina.unacknowledged == {}
    assert len({new_client_id() for _ in range(1000)}) == 1000


@pytest.mark.timeout(30)
@ensure
async def test_a_send_on_a_closed_connection_says_which_client_id_to_retry(
    client_factory: Any,
) -> None:
    hal = await client_factory("hal")
    await within(hal.join("late"))
    await within(hal.close())
    with pytest.raises(SendInterrupted) as raised:
        hal.send("late", "too late", client_id="my-id.1:a")
    error = raised.value
    assert isinstance(error, ConnectionLost)
    assert (error.client_id, error.sent, error.data["content"]) == ("my-id.1:a", False, "too late")


@pytest.fixture
def paused_server() -> Iterator[tuple[Any, str]]:
    """A ``twistd`` server (memory store) to pause with SIGSTOP; always resumed at the end."""
    with twistd_server("--store", "memory") as (proc, port):
        try:
            yield proc, f"ws://127.0.0.1:{port}/ws"
        finally:
            os.kill(proc.pid, signal.SIGCONT)


@pytest.mark.timeout(60)
@ensure
async def test_a_message_whose_answer_was_lost_is_stored_once_when_sent_again(
    paused_server: tuple[Any, str],
) -> None:
    proc, url = paused_server
    ivan = await within(connect(url))
    await within(ivan.login("ivan"))
    await within(ivan.join("retry"))

    os.kill(proc.pid, signal.SIGSTOP)  # the server will read the frame, but only later
    sending = ivan.send("retry", "exactly once")
    ivan.transport.loseConnection()  # after the frame is written: the answer never comes
    error = await failure_of(sending, SendInterrupted)
    assert error.sent is True
    assert ivan.unacknowledged == {error.client_id: error.data}
    os.kill(proc.pid, signal.SIGCONT)  # it reads the frame, stores it, answers nobody

    again = await within(connect(url))
    login = await within(again.login("ivan", resume=ivan.session_id))
    assert login["resumed"] is True
    answer = await within(again.resend(error.data))
    assert (answer["duplicate"], answer["client_id"]) == (True, error.client_id)
    assert messages_of(await within(again.history("retry"))) == ["exactly once"]
    await within(again.logout())
    await within(again.close())


# Read positions, conversations, private history


@pytest.mark.timeout(30)
@ensure
async def test_read_positions_and_conversations_count_what_others_sent(
    client_factory: Any,
) -> None:
    jane = await client_factory("jane")
    kurt = await client_factory("kurt")
    await within(jane.join("news"))
    await within(kurt.join("news"))
    await within(kurt.send("news", "first"))
    last = await within(kurt.send("news", "second"))
    await within(jane.send("news", "mine"))  # one's own messages are never unread
    await within(kurt.send(user="jane", content="psst"))

    rows = await within(jane.conversations())
    assert [(r["channel"], r["read_seq"], r["unread"]) for r in rows] == [
        ("news", 0, 2),
        (None, 0, 1),
    ]
    assert await within(jane.read("news", last["seq"])) == {"channel": "news", "seq": last["seq"]}
    assert (await within(jane.read("news", 1)))["seq"] == last["seq"]  # never moves back
    inbox_top = rows[-1]["last_seq"]
    await within(jane.read(None, inbox_top))
    rows = await within(jane.conversations())
    assert [(r["channel"], r["read_seq"], r["unread"]) for r in rows] == [
        ("news", last["seq"], 0),
        (None, inbox_top, 0),
    ]


@pytest.mark.timeout(30)
@ensure
async def test_history_with_a_user_pages_one_conversation_in_both_directions(
    client_factory: Any,
) -> None:
    lena = await client_factory("lena")
    max_ = await client_factory("max")
    nora = await client_factory("nora")
    await within(lena.send(user="max", content="hi max"))
    await within(nora.send(user="lena", content="hi lena, nora here"))
    await within(max_.send(user="lena", content="hi lena"))
    talk = await within(lena.history(user="max"))
    assert [(i["from"], i["to"], i["content"]) for i in talk] == [
        ("lena", "max", "hi max"),  # the sender's own copy
        ("max", "lena", "hi lena"),
    ]
    assert messages_of(await within(lena.history(user="max", limit=1))) == ["hi lena"]
    assert len(messages_of(await within(lena.history()))) == 3


# Connecting


@pytest.mark.timeout(30)
@ensure
async def test_connect_timeout_covers_a_listener_that_never_answers() -> None:
    silent = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
    try:
        started = time.monotonic()
        error = await failure_of(
            connect(f"ws://127.0.0.1:{silent.getHost().port}/ws", timeout=0.5), TimeoutError
        )
        elapsed = time.monotonic() - started
        assert 0.4 < elapsed < 2.0, elapsed  # Autobahn's own handshake timer says 5 s
        assert "within 0.5 s" in str(error)
    finally:
        await within(silent.stopListening())


# ReconnectingClient


class Recorder(Observer):
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.events: list[Any] = []
        self.losses = 0

    def item(self, item: dict[str, Any]) -> None:
        self.items.append(item)

    def ready(self, event: Any) -> None:
        self.events.append(event)

    def lost(self, reason: Any, delay: float) -> None:
        self.losses += 1


@pytest.mark.timeout(60)
@ensure
async def test_reconnecting_client_resumes_catches_up_and_sends_again_once(
    paused_server: tuple[Any, str],
) -> None:
    proc, url = paused_server
    other = await within(connect(url))
    await within(other.login("oscar"))
    await within(other.join("relay"))
    recorder = Recorder()
    session = ReconnectingClient(url, "pia", observer=recorder, initial_delay=0.1)
    await within(session.start())
    await within(session.join("relay"))

    os.kill(proc.pid, signal.SIGSTOP)
    sent = session.send("relay", "through the outage")
    assert session.client is not None
    session.client.transport.loseConnection()  # the frame goes out, the answer never comes
    await until(lambda: recorder.losses == 1, what="the loss to be seen")
    queued = session.send("relay", "typed while away")  # no connection: queued
    os.kill(proc.pid, signal.SIGCONT)
    await within(other.send("relay", "said while pia was away"))

    first, second = await within(sent), await within(queued)
    assert (first["duplicate"], second["duplicate"]) == (True, False)
    event = recorder.events[-1]
    assert (event.first, event.resumed) == (False, True)
    await until(
        lambda: "said while pia was away" in [i.get("content") for i in recorder.items],
        what="the missed message",
    )
    history = await within(other.history("relay"))
    assert messages_of(history) == [
        "through the outage",
        "said while pia was away",
        "typed while away",
    ] or messages_of(history) == [
        "through the outage",
        "typed while away",
        "said while pia was away",
    ]
    assert [i["kind"] for i in history].count("leave") == 0  # nobody saw pia leave
    await within(session.logout())
    assert (await within(other.members("relay"))) == [{"username": "oscar", "online": True}]
    await within(other.close())
