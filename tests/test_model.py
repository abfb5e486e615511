"""A model-based test: random sessions against a small reference model of PROTOCOL.md.

Hypothesis drives random sequences of logins (resuming the session when there is one),
disconnects, logouts, joins, leaves, channel and private messages, ``messages`` feeds opened
with or without ``since`` positions, credit grants and reads, against each store as users run
it (``twistd -n chat``) with a memory cache of 8 items and a retention of 30 items per log, so
that disk pages and retention gaps are hit all the time.

The model predicts every response (which seq each append gets, who may post where) and, for
every feed, exactly which seqs of which log it owes: the segments of each log the session was
a member of while the feed was open (PROTOCOL.md, The messages feed). A feed passes when every
seq it owes is delivered once, in order, with the content the model holds, or named by a
``gap`` — and a gap names only seqs retention had removed (below the log's oldest retained seq).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import websocket
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.peer import STORES, Peer, code, data, store_server

RETENTION = 30
USERS = ("ann", "ben", "cat")
CHANNELS = ("x", "y")
FEED = 2
EXAMPLES = 60


class Log:
    """The reference of one log: its items by seq, and its retention."""

    def __init__(self) -> None:
        self.items: dict[int, dict[str, Any]] = {}
        self.last = 0

    def append(self, item: dict[str, Any]) -> int:
        self.last += 1
        self.items[self.last] = item
        return self.last

    @property
    def first(self) -> int:
        return max(1, self.last - RETENTION + 1)


class Feed:
    """What one ``messages`` feed owes and what it delivered."""

    def __init__(self, since: dict[str, int]) -> None:
        self.segments: dict[str, list[list[int | None]]] = {}  # log -> [[start, end]]
        self.delivered: dict[str, list[dict[str, Any]]] = {}
        self.since = dict(since)  # "@" or channel -> seq; used the first time a log starts
        self.open = True

    def begin(self, log: str, key: str, default: int, last: int) -> None:
        """A log starts: after ``since[key]`` the first time it is given, else at ``default``."""
        if key in self.since:
            self.start(log, min(self.since.pop(key), last) + 1)
        else:
            self.start(log, default)

    def start(self, log: str, seq: int) -> None:
        segments = self.segments.setdefault(log, [])
        if not segments or segments[-1][1] is not None:
            segments.append([seq, None])

    def end(self, log: str, seq: int) -> None:
        segments = self.segments.get(log)
        if segments and segments[-1][1] is None:
            segments[-1][1] = seq

    def owed(self, log: str, last: int) -> list[int]:
        seqs: list[int] = []
        for start, end in self.segments.get(log, []):
            assert start is not None
            seqs.extend(range(start, (end if end is not None else last) + 1))
        return sorted(set(seqs))

    def position(self, log: str) -> int:
        """The last seq delivered (or named by a gap) of ``log``."""
        items = self.delivered.get(log, [])
        if not items:
            return 0
        item = items[-1]
        return int(item["last"] if item["kind"] == "gap" else item["seq"])


class User:
    def __init__(self, name: str) -> None:
        self.name = name
        self.peer: Peer | None = None
        self.session: str | None = None  # id of the live session, if any
        self.channels: dict[str, None] = {}  # ordered: the order of the joins
        self.feed: Feed | None = None
        self.old_feeds: list[Feed] = []
        self.known = False  # has logged in at least once


def log_key(channel: str | None, user: str) -> str:
    return f"#{channel}" if channel is not None else f"@{user}"


class ChatModel(RuleBasedStateMachine):
    url = ""

    @initialize()
    def start(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.users = {u: User(f"{u}{tag}") for u in USERS}
        self.channel_names = {c: f"{c}{tag}" for c in CHANNELS}
        self.logs: dict[str, Log] = {}
        self.epoch: str | None = None

    def log(self, key: str) -> Log:
        return self.logs.setdefault(key, Log())

    # --- sessions ---

    @rule(who=st.sampled_from(USERS))
    def connect(self, who: str) -> None:
        user = self.users[who]
        if user.peer is not None:
            return
        user.peer = Peer(self.url)
        answer = user.peer.request(
            "login", {"username": user.name, **({"resume": user.session} if user.session else {})}
        )
        got = data(answer)
        assert got["resumed"] is (user.session is not None), (answer, user.session)
        if user.session is not None:
            assert got["session_id"] == user.session
        user.session = got["session_id"]
        user.known = True
        self.epoch = got["epoch"]

    @precondition(lambda self: any(u.peer for u in self.users.values()))
    @rule(who=st.sampled_from(USERS))
    def disconnect(self, who: str) -> None:
        user = self.users[who]
        if user.peer is None:
            return
        self._take(user, 0)  # whatever has arrived; the rest of the backlog stays on the server
        user.peer.close()
        user.peer = None
        if user.feed is not None:
            user.feed.open = False
            user.old_feeds.append(user.feed)
            user.feed = None

    @rule(who=st.sampled_from(USERS), credit=st.sampled_from([None, 3]))
    def reconnect(self, who: str, credit: int | None) -> None:
        """Drop the connection mid-backlog, resume the session, reopen the feed from where
        the old one stopped (what a client does after a network change)."""
        if self.users[who].peer is None:
            return
        self.disconnect(who)
        self.connect(who)
        self.open_feed(who, True, credit)

    @rule(who=st.sampled_from(USERS))
    def logout(self, who: str) -> None:
        user = self.users[who]
        if user.peer is None:
            return
        assert data(user.peer.request("logout")) == {}
        if user.feed is not None:  # the server ends the feed: take everything it sent before
            self._take_until_end(user)
        for channel in user.channels:  # the session ends: it leaves, in join order (its own
            self.log(f"#{channel}").append({"kind": "leave", "from": user.name})  # feed ended)
        user.channels.clear()
        user.session = None
        if user.feed is not None:  # the server ends it with unauthenticated
            user.feed.open = False
            user.old_feeds.append(user.feed)
            user.feed = None
        again = data(user.peer.request("login", {"username": user.name}))
        assert again["resumed"] is False
        user.session = again["session_id"]

    # --- channels and messages ---

    @rule(who=st.sampled_from(USERS), which=st.sampled_from(CHANNELS))
    def join(self, who: str, which: str) -> None:
        user, channel = self.users[who], self.channel_names[which]
        if user.peer is None:
            return
        answer = data(user.peer.request("channel.join", {"channel": channel}))
        log = self.log(f"#{channel}")
        if channel in user.channels:
            assert answer["seq"] == log.last
            return
        seq = log.append({"kind": "join", "from": user.name})
        assert answer["seq"] == seq
        user.channels[channel] = None
        if user.feed is not None:
            user.feed.begin(f"#{channel}", channel, seq, log.last)

    @rule(who=st.sampled_from(USERS), which=st.sampled_from(CHANNELS))
    def leave(self, who: str, which: str) -> None:
        user, channel = self.users[who], self.channel_names[which]
        if user.peer is None:
            return
        data(user.peer.request("channel.leave", {"channel": channel}))
        if channel not in user.channels:
            return
        seq = self.log(f"#{channel}").append({"kind": "leave", "from": user.name})
        del user.channels[channel]
        if user.feed is not None:
            user.feed.end(f"#{channel}", seq)

    @rule(
        who=st.sampled_from(USERS),
        which=st.sampled_from(CHANNELS),
        count=st.integers(1, 40),
    )
    def post(self, who: str, which: str, count: int) -> None:
        user, channel = self.users[who], self.channel_names[which]
        if user.peer is None:
            return
        frames = [
            user.peer.request_frame(
                "message", {"channel": channel, "content": f"m{n}" + "z" * (n % 7)}
            )
            for n in range(1, count + 1)
        ]
        user.peer.pipelined(frames)
        for n, frame in enumerate(frames, 1):
            answer = user.peer.answer(frame["id"])
            if channel not in user.channels:
                assert code(answer) == "forbidden"
                continue
            item = {"kind": "message", "from": user.name, "content": f"m{n}" + "z" * (n % 7)}
            assert data(answer)["seq"] == self.log(f"#{channel}").append(item)

    @rule(who=st.sampled_from(USERS), to=st.sampled_from(USERS))
    def private(self, who: str, to: str) -> None:
        user, other = self.users[who], self.users[to]
        if user.peer is None or not other.known:
            return
        content = f"dm from {user.name}"
        answer = data(user.peer.request("message", {"user": other.name, "content": content}))
        item = {"kind": "message", "from": user.name, "to": other.name, "content": content}
        own = self.log(f"@{user.name}").append(item)
        assert answer["seq"] == own
        if other is not user:
            self.log(f"@{other.name}").append(item)

    # --- feeds ---

    @rule(who=st.sampled_from(USERS), since=st.booleans(), credit=st.sampled_from([None, 1, 5]))
    def open_feed(self, who: str, since: bool, credit: int | None) -> None:
        user = self.users[who]
        if user.peer is None or user.feed is not None:
            return
        previous = user.old_feeds[-1] if user.old_feeds and since else None
        positions: dict[str, int] = {}
        if previous is not None:
            for log in previous.segments:
                key = "@" if log.startswith("@") else log[1:]
                positions[key] = previous.position(log)
        feed = Feed(positions)
        inbox = self.log(f"@{user.name}")
        feed.begin(f"@{user.name}", "@", inbox.last + 1, inbox.last)
        joins = self._join_seqs(user)
        for channel in user.channels:
            feed.begin(f"#{channel}", channel, joins[channel], self.log(f"#{channel}").last)
        frame: dict[str, Any] = {"type": "stream", "id": FEED, "route": "messages"}
        if previous is not None:
            frame["data"] = {"since": positions, "epoch": self.epoch}
        if credit is not None:
            frame["credit"] = credit
        user.peer.send(frame)
        user.feed = feed

    def _join_seqs(self, user: User) -> dict[str, int]:
        """The seq of the user's current join item of each channel it is in."""
        seqs = {}
        for channel in user.channels:
            log = self.log(f"#{channel}")
            seqs[channel] = max(
                seq for seq, item in log.items.items()
                if item["kind"] == "join" and item["from"] == user.name
            )  # fmt: skip
        return seqs

    @rule(who=st.sampled_from(USERS), n=st.integers(1, 50))
    def grant(self, who: str, n: int) -> None:
        user = self.users[who]
        if user.peer is not None and user.feed is not None:
            user.peer.send({"type": "request_n", "id": FEED, "n": n})

    @rule(who=st.sampled_from(USERS))
    def read(self, who: str) -> None:
        user = self.users[who]
        if user.peer is not None:
            self._take(user, 0.05)

    def _take(self, user: User, timeout: float) -> None:
        """Move the feed frames that have arrived into the feed's delivered lists."""
        assert user.peer is not None
        peer = user.peer
        peer.ws.sock.settimeout(timeout)
        try:
            while True:
                frame = json.loads(peer.ws.recv())
                peer.inbox.append(frame)
        except (TimeoutError, BlockingIOError, websocket.WebSocketTimeoutException):
            pass
        finally:
            peer.ws.sock.settimeout(20)
        rest = []
        for frame in peer.inbox:
            if frame.get("id") == FEED and user.feed is not None:
                assert frame["type"] == "next", frame
                item = frame["data"]
                user.feed.delivered.setdefault(log_key(item["channel"], user.name), []).append(item)
            elif frame.get("id") != FEED:
                rest.append(frame)
        peer.inbox = rest

    def _take_until_end(self, user: User) -> None:
        """Take the feed's frames up to the error that ends it (after a logout)."""
        assert user.peer is not None and user.feed is not None
        feed = user.feed
        while True:
            frame = user.peer.wait(lambda f: f.get("id") == FEED)
            if frame["type"] != "next":
                assert frame["type"] == "error", frame
                return
            item = frame["data"]
            feed.delivered.setdefault(log_key(item["channel"], user.name), []).append(item)

    def _drain(self, user: User) -> None:
        """Grant every credit and read until the feed delivered all it owes."""
        feed = user.feed
        if feed is None or user.peer is None:
            return
        user.peer.send({"type": "request_n", "id": FEED, "n": 2**31 - 1})
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            self._take(user, 0.05)
            if all(
                feed.position(log) >= max(owed)
                for log in feed.segments
                if (owed := feed.owed(log, self.log(log).last))
            ):
                return
        raise AssertionError(f"{user.name}'s feed did not catch up: {self._summary(feed)}")

    def _summary(self, feed: Feed) -> dict[str, Any]:
        return {
            log: {"owed_to": self.log(log).last, "at": feed.position(log), "segments": s}
            for log, s in feed.segments.items()
        }

    # --- the checks ---

    def _check(self, feed: Feed, complete: bool) -> None:
        for log, items in feed.delivered.items():
            model = self.log(log)
            owed = feed.owed(log, model.last)
            got: list[int] = []
            for item in items:
                if item["kind"] == "gap":
                    assert item["last"] < model.first, ("a gap names retained seqs", log, item)
                    got.extend(range(item["first"], item["last"] + 1))
                else:
                    expected = model.items[item["seq"]]
                    assert {k: item.get(k) for k in expected} == expected, (log, item, expected)
                    got.append(item["seq"])
            assert got == sorted(got) and len(got) == len(set(got)), (
                "order or duplicate",
                log,
                got,
            )
            assert set(got) <= set(owed), ("items not owed", log, sorted(set(got) - set(owed)))
            if complete:
                assert got == owed, ("missing", log, sorted(set(owed) - set(got)))

    @invariant()
    def delivered_so_far_is_consistent(self) -> None:
        if not hasattr(self, "users"):
            return
        for user in self.users.values():
            for feed in [*user.old_feeds, *([user.feed] if user.feed else [])]:
                self._check(feed, complete=False)

    def teardown(self) -> None:
        try:
            if hasattr(self, "users"):
                for user in self.users.values():
                    if user.peer is not None and user.feed is not None:
                        self._drain(user)
                        self._check(user.feed, complete=True)
        finally:
            for user in getattr(self, "users", {}).values():
                if user.peer is not None:
                    user.peer.request("logout")
                    user.peer.close()


@pytest.fixture(scope="module", params=STORES)
def model_url(request: Any) -> Iterator[str]:
    options = ["--cache", "8", "--retention", str(RETENTION), "--session-linger", "600"]
    with store_server(request.param, *options) as url:
        yield url


def test_the_server_follows_the_model(model_url: str) -> None:
    ChatModel.url = model_url
    run_state_machine_as_test(
        ChatModel,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
