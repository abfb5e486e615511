"""Fuzzing over a real connection (hypothesis): random and mutated frames never crash the
server or leave an unhandled error in its log; every answer follows PROTOCOL.md, and the
connection stays usable (a probe request after each frame is answered)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
import websocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import server_log, twistd_server

EXAMPLES = 2000 if os.environ.get("CI") == "true" else 400
ERROR_CODES = {
    "bad_frame",
    "duplicate_id",
    "unknown_route",
    "unauthenticated",
    "invalid_data",
    "username_taken",
    "not_found",
    "forbidden",
    "rate_limited",
    "internal",
}
SERVER_TYPES = {"response", "next", "complete", "error"}
ROUTES = [
    "login",
    "message",
    "channel.join",
    "channel.leave",
    "channels",
    "channel.users",
    "messages",
    "history",
    "statistics",
    "nope",
]
PROBE_ID = 2**53 - 1


class Fuzzer:
    def __init__(self, url: str) -> None:
        self.url = url
        self.ws = websocket.create_connection(url, timeout=10)
        self.sent = 0

    def reconnect(self) -> None:
        self.ws.close()
        self.ws = websocket.create_connection(self.url, timeout=10)

    def probe(self) -> None:
        """A good frame after the fuzzed one must be answered, and everything must be valid."""
        self.ws.send(json.dumps({"type": "request", "id": PROBE_ID, "route": "nope"}))
        while True:
            frame = json.loads(self.ws.recv())
            assert isinstance(frame, dict) and frame.get("type") in SERVER_TYPES, frame
            if frame["type"] == "error":
                assert frame["error"]["code"] in ERROR_CODES, frame
                assert isinstance(frame["error"]["message"], str) and frame["error"]["message"]
            if frame.get("id") == PROBE_ID and frame["type"] == "error":
                return


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[Any, str]]:
    with twistd_server("--store", "memory") as (proc, port):
        yield proc, f"ws://127.0.0.1:{port}/ws"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
ids = st.one_of(
    st.integers(min_value=1, max_value=200),
    st.integers(),
    st.floats(),
    st.text(max_size=5),
    st.none(),
    st.booleans(),
)
names = st.one_of(st.from_regex(r"[A-Za-z0-9_.\-]{1,8}", fullmatch=True), st.text(max_size=40))
route_data = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "username": names,
            "channel": names,
            "user": names,
            "content": st.text(max_size=50),
            "since": st.dictionaries(names, st.integers(min_value=-5, max_value=10**6), max_size=3),
            "epoch": st.text(max_size=10),
            "before": ids,
            "after": ids,
            "limit": ids,
            "ids": st.lists(st.sampled_from(["users", "channels", "memory", "bogus"]), max_size=4),
            "period_seconds": st.floats(min_value=-1, max_value=5000),
            "memory_usage": ids,
        },
    ),
)
frames = st.fixed_dictionaries(
    {
        "type": st.one_of(
            st.sampled_from(
                [
                    "request",
                    "fire",
                    "stream",
                    "channel",
                    "next",
                    "complete",
                    "cancel",
                    "request_n",
                    "response",
                ]
            ),
            st.text(max_size=8),
        )
    },
    optional={
        "id": ids,
        "route": st.one_of(st.sampled_from(ROUTES), st.text(max_size=12)),
        "data": route_data,
        "credit": ids,
        "n": ids,
        "extra": json_values,
    },
)
texts = st.one_of(
    frames.map(json.dumps),
    json_values.map(json.dumps),
    st.text(max_size=200),
    st.integers(min_value=1, max_value=3000).map(lambda depth: "[" * depth + "]" * depth),
    frames.map(lambda f: json.dumps(f)[:-1]),  # truncated
    st.just('{"type":"request","id":1,"route":"login","data":{"username":"\\ud800"}}'),
)


@pytest.mark.timeout(600)
@settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)
@given(text=texts)
def test_random_frames_never_break_the_server(server: tuple[Any, str], text: str) -> None:
    proc, url = server
    fuzzer = FUZZERS.setdefault(url, Fuzzer(url))
    fuzzer.sent += 1
    if fuzzer.sent % 50 == 0:
        fuzzer.reconnect()  # start again from a clean connection now and then
    fuzzer.ws.send(text)
    fuzzer.probe()
    assert proc.poll() is None


FUZZERS: dict[str, Fuzzer] = {}


def test_server_log_has_no_unhandled_error(server: tuple[Any, str]) -> None:
    """Runs after the fuzzing: stop the server and read its whole log."""
    proc, _url = server
    for fuzzer in FUZZERS.values():
        fuzzer.ws.close()
    proc.terminate()
    proc.wait(10)
    output = server_log(proc)
    assert "Traceback" not in output, output[-5000:]
    assert "Unhandled" not in output, output[-5000:]
