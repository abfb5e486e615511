"""The interaction state machine of one connection (chat.protocol.interactions), sans I/O.

No reactor here: the core is pure, so these tests feed it text and look at what it returns.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chat.protocol.closes import CloseCode
from chat.protocol.errors import ErrorCode
from chat.protocol.frames import MAX_CREDIT
from chat.protocol.interactions import (
    DEFAULT_MAX_BAD_IN_ROW,
    DEFAULT_MAX_OPEN,
    Cancelled,
    ClientCompleted,
    ClientNext,
    CloseConnection,
    CreditGranted,
    Fired,
    Interaction,
    Interactions,
    Kind,
    Opened,
    Refused,
)


def send(core: Interactions, **frame: Any) -> Any:
    return core.receive(json.dumps(frame))


def open_one(
    core: Interactions, fid: int, kind: str = "stream", route: str = "r", **extra: Any
) -> Interaction:
    event = send(core, type=kind, id=fid, route=route, **extra)
    assert isinstance(event, Opened), event
    return event.interaction


def refused(event: Any) -> dict[str, Any]:
    assert isinstance(event, Refused), event
    decoded: dict[str, Any] = json.loads(event.frame)
    assert decoded["type"] == "error"
    return decoded


# --- opening ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("request", Kind.REQUEST), ("stream", Kind.STREAM), ("channel", Kind.CHANNEL)],
)
def test_opening_frames_open_an_interaction(kind: str, expected: Kind) -> None:
    core = Interactions()
    event = send(core, type=kind, id=4, route="login", data={"username": "a"})
    assert isinstance(event, Opened)
    assert event.data == {"username": "a"}
    interaction = event.interaction
    assert (interaction.id, interaction.kind, interaction.route) == (4, expected, "login")
    assert interaction.open
    assert interaction.credit is None
    assert interaction.prefix == b'{"type":"next","id":4,"data":'
    assert core.open == {4: interaction}


def test_stream_credit_is_kept_on_the_interaction() -> None:
    core = Interactions()
    assert open_one(core, 1, credit=5).credit == 5
    assert open_one(core, 2, "channel", credit=2**40).credit == MAX_CREDIT


def test_fire_opens_nothing() -> None:
    core = Interactions()
    event = send(core, type="fire", route="statistics", data={"memory_usage": 3})
    assert event == Fired("statistics", {"memory_usage": 3})
    assert core.open == {}


# --- lifecycle ----------------------------------------------------------------------------


def test_respond_ends_a_request() -> None:
    core = Interactions()
    interaction = open_one(core, 1, "request")
    assert core.respond(interaction, {"ok": True}) == (
        b'{"type":"response","id":1,"data":{"ok":true}}'
    )
    assert not interaction.open
    assert core.open == {}


def test_complete_ends_a_stream() -> None:
    core = Interactions()
    interaction = open_one(core, 2)
    assert core.complete(interaction) == b'{"type":"complete","id":2}'
    assert not interaction.open
    assert core.open == {}


def test_fail_ends_an_interaction_with_an_error_frame() -> None:
    core = Interactions()
    interaction = open_one(core, 3, "channel")
    frame = core.fail(interaction, ErrorCode.INVALID_DATA, "bad period")
    assert json.loads(frame or b"") == {
        "type": "error",
        "id": 3,
        "error": {"code": "invalid_data", "message": "bad period"},
    }
    assert core.open == {}


def test_cancel_ends_the_interaction() -> None:
    core = Interactions()
    interaction = open_one(core, 4)
    event = send(core, type="cancel", id=4)
    assert event == Cancelled(interaction)
    assert not interaction.open
    assert core.open == {}


@pytest.mark.parametrize("end", ["respond", "complete", "fail", "cancel", "close_all"])
def test_frames_for_an_ended_interaction_are_none(end: str) -> None:
    core = Interactions()
    interaction = open_one(core, 5, "request" if end == "respond" else "stream")
    if end == "respond":
        core.respond(interaction, 1)
    elif end == "complete":
        core.complete(interaction)
    elif end == "fail":
        core.fail(interaction, ErrorCode.INTERNAL, "x")
    elif end == "cancel":
        send(core, type="cancel", id=5)
    else:
        core.close_all()
        assert not interaction.open
    assert core.respond(interaction, {"late": 1}) is None
    assert core.complete(interaction) is None
    assert core.fail(interaction, ErrorCode.INTERNAL, "late") is None
    assert core.open == {}


def test_an_ended_id_may_be_reused() -> None:
    core = Interactions()
    first = open_one(core, 6, "request")
    core.respond(first, None)
    second = open_one(core, 6, "request")
    assert second is not first
    assert core.open == {6: second}


def test_a_stale_interaction_cannot_end_the_one_reusing_its_id() -> None:
    core = Interactions()
    stale = open_one(core, 7)
    send(core, type="cancel", id=7)
    fresh = open_one(core, 7)
    assert core.complete(stale) is None
    assert core.fail(stale, ErrorCode.INTERNAL, "x") is None
    assert fresh.open
    assert core.open == {7: fresh}


def test_close_all_ends_every_interaction() -> None:
    core = Interactions()
    opened = [open_one(core, i, kind) for i, kind in enumerate(["request", "stream", "channel"], 1)]
    core.close_all()
    assert all(not i.open for i in opened)
    assert core.open == {}
    assert send(core, type="cancel", id=2) is None


# --- duplicate ids and the open limit -----------------------------------------------------


@pytest.mark.parametrize("kind", ["request", "stream", "channel"])
def test_duplicate_id_is_refused_and_the_open_one_goes_on(kind: str) -> None:
    core = Interactions()
    original = open_one(core, 9, "stream", credit=3)
    error = refused(send(core, type=kind, id=9, route="other"))
    assert error["id"] == 9
    assert error["error"]["code"] == "duplicate_id"
    assert error["error"]["message"]
    assert core.open == {9: original}
    assert original.open and original.route == "r" and original.credit == 3
    assert core.complete(original) == b'{"type":"complete","id":9}'


def test_the_65th_open_interaction_is_rate_limited() -> None:
    core = Interactions()
    assert DEFAULT_MAX_OPEN == 64
    opened = [open_one(core, i) for i in range(1, 65)]
    error = refused(send(core, type="request", id=65, route="r"))
    assert error["id"] == 65
    assert error["error"]["code"] == "rate_limited"
    assert 65 not in core.open
    assert len(core.open) == 64

    core.complete(opened[10])
    assert open_one(core, 65, "request").id == 65
    assert len(core.open) == 64
    assert refused(send(core, type="channel", id=66, route="r"))["error"]["code"] == (
        "rate_limited"
    )


def test_cancel_also_frees_a_slot() -> None:
    core = Interactions(max_open=2)
    open_one(core, 1)
    open_one(core, 2)
    assert refused(send(core, type="stream", id=3, route="r"))["error"]["code"] == "rate_limited"
    send(core, type="cancel", id=1)
    open_one(core, 3)


def test_duplicate_is_reported_before_the_limit() -> None:
    core = Interactions(max_open=1)
    open_one(core, 1)
    assert refused(send(core, type="stream", id=1, route="r"))["error"]["code"] == "duplicate_id"


def test_fire_is_not_counted_against_the_limit() -> None:
    core = Interactions(max_open=1)
    open_one(core, 1)
    assert isinstance(send(core, type="fire", route="statistics"), Fired)


# --- credit -------------------------------------------------------------------------------


def test_request_n_adds_credit() -> None:
    core = Interactions()
    interaction = open_one(core, 1, credit=2)
    assert send(core, type="request_n", id=1, n=3) == CreditGranted(interaction)
    assert interaction.credit == 5
    interaction.credit = 0  # a producer spent it
    send(core, type="request_n", id=1, n=1)
    assert interaction.credit == 1


def test_credit_is_capped() -> None:
    core = Interactions()
    interaction = open_one(core, 1, "channel", credit=MAX_CREDIT - 1)
    send(core, type="request_n", id=1, n=5)
    assert interaction.credit == 2**31 - 1
    send(core, type="request_n", id=1, n=2**31 - 1)
    assert interaction.credit == 2**31 - 1


def test_request_n_on_unlimited_credit_keeps_it_unlimited() -> None:
    core = Interactions()
    interaction = open_one(core, 1)
    assert send(core, type="request_n", id=1, n=10) == CreditGranted(interaction)
    assert interaction.credit is None


def test_request_n_on_a_request_is_ignored() -> None:
    core = Interactions()
    interaction = open_one(core, 1, "request")
    assert send(core, type="request_n", id=1, n=10) is None
    assert interaction.credit is None
    assert interaction.open


def test_request_n_on_an_unknown_or_ended_id_is_ignored() -> None:
    core = Interactions()
    assert send(core, type="request_n", id=1, n=10) is None
    interaction = open_one(core, 2, credit=1)
    core.complete(interaction)
    assert send(core, type="request_n", id=2, n=10) is None
    assert interaction.credit == 1


# --- client next / complete / cancel on the wrong thing ------------------------------------


def test_client_next_and_complete_on_a_channel() -> None:
    core = Interactions()
    interaction = open_one(core, 1, "channel")
    assert send(core, type="next", id=1, data={"ids": ["users"]}) == ClientNext(
        interaction, {"ids": ["users"]}
    )
    assert send(core, type="complete", id=1) == ClientCompleted(interaction)
    assert interaction.open  # a client complete ends nothing
    assert send(core, type="next", id=1, data=2) == ClientNext(interaction, 2)


@pytest.mark.parametrize("kind", ["request", "stream"])
def test_client_next_and_complete_elsewhere_are_ignored(kind: str) -> None:
    core = Interactions()
    interaction = open_one(core, 1, kind)
    assert send(core, type="next", id=1, data={}) is None
    assert send(core, type="complete", id=1) is None
    assert interaction.open
    assert core.open == {1: interaction}


def test_frames_on_ids_that_are_not_open_are_ignored() -> None:
    core = Interactions()
    for frame in (
        {"type": "cancel", "id": 3},
        {"type": "next", "id": 3, "data": 1},
        {"type": "complete", "id": 3},
        {"type": "request_n", "id": 3, "n": 1},
    ):
        assert send(core, **frame) is None
    assert core.bad_in_row == 0


def test_late_cancel_is_ignored() -> None:
    core = Interactions()
    interaction = open_one(core, 1, "request")
    core.respond(interaction, None)
    assert send(core, type="cancel", id=1) is None


# --- bad frames ---------------------------------------------------------------------------


def test_bad_frame_is_refused_with_its_id_or_null() -> None:
    core = Interactions()
    with_id = refused(send(core, type="stream", id=4, route=""))
    assert with_id["id"] == 4 and with_id["error"]["code"] == "bad_frame"
    without = refused(core.receive("not json"))
    assert without["id"] is None and without["error"]["code"] == "bad_frame"
    assert core.open == {}


def test_a_bad_frame_does_not_disturb_open_interactions() -> None:
    core = Interactions()
    interaction = open_one(core, 1, credit=1)
    refused(send(core, type="request_n", id=1, n=0))
    assert interaction.credit == 1 and core.open == {1: interaction}


def test_100_bad_frames_in_a_row_close_with_1008() -> None:
    core = Interactions()
    assert DEFAULT_MAX_BAD_IN_ROW == 100
    for _ in range(99):
        refused(core.receive("[]"))
    event = core.receive("{")
    assert isinstance(event, CloseConnection)
    assert event.disconnect.code == CloseCode.POLICY_VIOLATION == 1008
    assert event.disconnect.reason


def test_a_good_frame_resets_the_bad_count() -> None:
    core = Interactions()
    for _ in range(99):
        refused(core.receive("[]"))
    assert send(core, type="cancel", id=77) is None  # well-formed, though ignored
    assert core.bad_in_row == 0
    for _ in range(99):
        refused(core.receive("[]"))
    assert isinstance(core.receive("[]"), CloseConnection)


@pytest.mark.parametrize(
    "good",
    [
        {"type": "fire", "route": "x"},
        {"type": "request", "id": 1, "route": "x"},
    ],
)
def test_any_well_formed_frame_resets_the_count(good: dict[str, Any]) -> None:
    core = Interactions(max_bad_in_row=3)
    refused(core.receive("x"))
    refused(core.receive("x"))
    send(core, **good)
    refused(core.receive("x"))
    refused(core.receive("x"))
    assert isinstance(core.receive("x"), CloseConnection)


def test_refused_opening_is_not_a_bad_frame() -> None:
    core = Interactions(max_open=1, max_bad_in_row=2)
    open_one(core, 1)
    refused(core.receive("x"))
    refused(send(core, type="stream", id=1, route="r"))  # duplicate_id resets the count
    refused(core.receive("x"))
    assert core.bad_in_row == 1


def test_bad_frame_with_a_lone_surrogate_is_refused_not_raised() -> None:
    # An escaped lone surrogate is no Unicode text: the whole frame is refused as not JSON,
    # and the error frame is still valid UTF-8.
    core = Interactions()
    error = refused(core.receive('{"type":"\\udc80","id":2}'))
    assert error["id"] is None and error["error"]["code"] == "bad_frame"
    assert "surrogate" in error["error"]["message"]


# --- the core is sans-IO -----------------------------------------------------------------


def test_the_protocol_core_imports_neither_twisted_nor_autobahn() -> None:
    code = (
        "import sys\n"
        "import chat.protocol.frames, chat.protocol.interactions, chat.protocol.wsframe\n"
        "import chat.protocol.errors\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('twisted', 'autobahn'))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=Path(__file__).resolve().parents[1],  # the repository root, where chat/ is
    )
    assert result.returncode == 0, result.stdout + result.stderr
