"""Client frame parsing and server frame encoding (PROTOCOL.md, "Frames"), without I/O."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chat.protocol.errors import BadFrame, ErrorCode
from chat.protocol.frames import (
    MAX_CREDIT,
    MAX_ID,
    Cancel,
    Channel,
    Complete,
    Fire,
    Next,
    Request,
    RequestN,
    Stream,
    encode_complete,
    encode_error,
    encode_json,
    encode_response,
    next_frame,
    next_prefix,
    parse_frame,
)


def dumps(value: Any) -> str:
    return json.dumps(value)


def bad(text: str | bytes) -> BadFrame:
    with pytest.raises(BadFrame) as info:
        parse_frame(text)
    exc = info.value
    assert exc.code is ErrorCode.BAD_FRAME
    assert exc.message, "every bad_frame error says what was wrong"
    return exc


# --- every client frame type parses -------------------------------------------------------


def test_request_parses_with_data() -> None:
    frame = parse_frame('{"type":"request","id":1,"route":"login","data":{"username":"a"}}')
    assert frame == Request(1, "login", {"username": "a"})


def test_request_without_data_has_data_none() -> None:
    assert parse_frame('{"type":"request","id":2,"route":"channels"}') == Request(2, "channels")


def test_fire_needs_no_id_and_ignores_one() -> None:
    assert parse_frame('{"type":"fire","route":"statistics","data":{"memory_usage":1}}') == Fire(
        "statistics", {"memory_usage": 1}
    )
    assert parse_frame('{"type":"fire","id":"junk","route":"x"}') == Fire("x")


def test_stream_parses_with_and_without_credit() -> None:
    assert parse_frame('{"type":"stream","id":3,"route":"messages"}') == Stream(3, "messages")
    assert parse_frame('{"type":"stream","id":3,"route":"messages","credit":10}') == Stream(
        3, "messages", None, 10
    )
    assert parse_frame('{"type":"stream","id":3,"route":"m","credit":null}') == Stream(3, "m")


def test_channel_parses_with_and_without_credit() -> None:
    text = '{"type":"channel","id":5,"route":"statistics","data":{"ids":["users"]},"credit":2}'
    assert parse_frame(text) == Channel(5, "statistics", {"ids": ["users"]}, 2)
    assert parse_frame('{"type":"channel","id":5,"route":"s"}') == Channel(5, "s")


def test_credit_above_the_cap_is_capped() -> None:
    frame = parse_frame(dumps({"type": "stream", "id": 1, "route": "m", "credit": 2**40}))
    assert frame == Stream(1, "m", None, MAX_CREDIT)


def test_next_complete_cancel_request_n_parse() -> None:
    assert parse_frame('{"type":"next","id":5,"data":{"ids":["users"]}}') == Next(
        5, {"ids": ["users"]}
    )
    assert parse_frame('{"type":"next","id":5}') == Next(5)
    assert parse_frame('{"type":"complete","id":5}') == Complete(5)
    assert parse_frame('{"type":"cancel","id":5}') == Cancel(5)
    assert parse_frame('{"type":"request_n","id":5,"n":7}') == RequestN(5, 7)


def test_request_n_above_the_cap_is_capped() -> None:
    assert parse_frame(dumps({"type": "request_n", "id": 1, "n": 2**31})) == RequestN(1, MAX_CREDIT)


def test_bytes_are_accepted_as_utf8() -> None:
    text = '{"type":"request","id":1,"route":"message","data":{"content":"héllo 😀"}}'
    assert parse_frame(text.encode()) == Request(1, "message", {"content": "héllo 😀"})


def test_largest_id_is_accepted() -> None:
    assert parse_frame(dumps({"type": "cancel", "id": MAX_ID})) == Cancel(2**53 - 1)


def test_unknown_fields_are_ignored() -> None:
    assert parse_frame('{"type":"cancel","id":1,"extra":[1,2]}') == Cancel(1)


# --- bad frames ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["", "   ", "not json", "{", '{"type":"request"', "{'type':'request'}", "[1,", "\x00"],
)
def test_text_that_is_not_json_is_a_bad_frame_with_null_id(text: str) -> None:
    exc = bad(text)
    assert exc.frame_id is None
    assert "JSON" in exc.message


def test_invalid_utf8_bytes_are_a_bad_frame() -> None:
    assert bad(b'{"type":"cancel","id":1,"x":"\xff\xfe"}').frame_id is None


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(text: str) -> None:
    exc = bad(text)
    assert exc.frame_id is None


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_inside_a_frame_are_refused(constant: str) -> None:
    bad('{"type":"request","id":1,"route":"x","data":{"v":' + constant + "}}")
    bad('{"type":"stream","id":' + constant + ',"route":"x"}')


@pytest.mark.parametrize("text", ["[" * 100_000, '{"a":' * 100_000, "[" * 100_000 + "]" * 100_000])
def test_deep_nesting_is_a_bad_frame_not_a_crash(text: str) -> None:
    assert bad(text).frame_id is None


def test_deep_nesting_inside_data_is_a_bad_frame() -> None:
    text = '{"type":"request","id":9,"route":"x","data":' + "[" * 100_000
    bad(text)


def test_integer_too_long_to_convert_is_a_bad_frame() -> None:
    bad('{"type":"cancel","id":' + "1" * 5000 + "}")


@pytest.mark.parametrize("value", [[], [1, 2], "a string", 42, 1.5, True, None])
def test_json_that_is_not_an_object_is_a_bad_frame(value: Any) -> None:
    exc = bad(dumps(value))
    assert exc.frame_id is None
    assert "object" in exc.message


@pytest.mark.parametrize(
    ("frame", "expected_id"),
    [
        ({"id": 4, "route": "x"}, 4),
        ({"type": None, "id": 4}, 4),
        ({"type": 3, "id": 4}, 4),
        ({"type": ["request"], "id": 4}, 4),
        ({"route": "x"}, None),
        ({"type": 1, "id": 0}, None),
    ],
)
def test_missing_or_ill_typed_type(frame: dict[str, Any], expected_id: int | None) -> None:
    exc = bad(dumps(frame))
    assert exc.frame_id == expected_id
    assert '"type"' in exc.message


@pytest.mark.parametrize("kind", ["subscribe", "REQUEST", "", "Request", "request "])
def test_unknown_type_is_a_bad_frame_echoing_the_id(kind: str) -> None:
    exc = bad(dumps({"type": kind, "id": 12, "route": "x"}))
    assert exc.frame_id == 12
    assert "unknown frame type" in exc.message


@pytest.mark.parametrize("kind", ["response", "error"])
def test_server_only_types_are_bad_frames(kind: str) -> None:
    exc = bad(dumps({"type": kind, "id": 3, "data": {}}))
    assert exc.frame_id == 3
    assert "server" in exc.message


ID_TYPES = ["request", "stream", "channel", "next", "complete", "cancel", "request_n"]


def opening(kind: str, **fields: Any) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": kind, "route": "r", "n": 1}
    frame.update(fields)
    return frame


@pytest.mark.parametrize("kind", ID_TYPES)
def test_missing_id_is_a_bad_frame(kind: str) -> None:
    frame = opening(kind)
    exc = bad(dumps(frame))
    assert exc.frame_id is None
    assert '"id"' in exc.message


@pytest.mark.parametrize("kind", ID_TYPES)
@pytest.mark.parametrize(
    "raw_id", [0, -1, -(2**53), 2**53, 2**64, True, False, 1.0, 2.5, "1", None, [1], {"id": 1}]
)
def test_unusable_id_is_a_bad_frame_with_null_id(kind: str, raw_id: Any) -> None:
    exc = bad(dumps(opening(kind, id=raw_id)))
    assert exc.frame_id is None
    assert '"id"' in exc.message


@pytest.mark.parametrize("kind", ["request", "stream", "channel", "fire"])
@pytest.mark.parametrize("route", [None, "", 5, ["x"], {"r": 1}, True])
def test_missing_or_ill_typed_route(kind: str, route: Any) -> None:
    frame: dict[str, Any] = {"type": kind, "id": 8}
    if route is not None:
        frame["route"] = route
    exc = bad(dumps(frame))
    # A fire has no id: its bad_frame always has id null (PROTOCOL.md, "Rules in detail").
    assert exc.frame_id == (None if kind == "fire" else 8)
    assert '"route"' in exc.message


@pytest.mark.parametrize("kind", ["stream", "channel"])
@pytest.mark.parametrize("credit", [0, -1, True, False, 1.5, 1.0, "5", [5], {"n": 5}])
def test_ill_typed_credit_is_a_bad_frame_echoing_the_id(kind: str, credit: Any) -> None:
    exc = bad(dumps({"type": kind, "id": 6, "route": "r", "credit": credit}))
    assert exc.frame_id == 6
    assert '"credit"' in exc.message


@pytest.mark.parametrize("n", [None, 0, -3, True, 1.0, "2", [1]])
def test_missing_or_ill_typed_n_is_a_bad_frame_echoing_the_id(n: Any) -> None:
    frame: dict[str, Any] = {"type": "request_n", "id": 6}
    if n is not None:
        frame["n"] = n
    exc = bad(dumps(frame))
    assert exc.frame_id == 6
    assert '"n"' in exc.message


def test_bad_frame_message_for_a_huge_value_is_short() -> None:
    exc = bad(dumps({"type": "stream", "id": 1, "route": "r", "credit": "x" * 10_000}))
    assert len(exc.message) < 200


# --- encoders -----------------------------------------------------------------------------


def test_encode_response_exact_bytes() -> None:
    assert encode_response(7, {"channel": "general", "seq": 1, "users": 1}) == (
        b'{"type":"response","id":7,"data":{"channel":"general","seq":1,"users":1}}'
    )
    assert encode_response(1, None) == b'{"type":"response","id":1,"data":null}'


def test_encode_complete_exact_bytes() -> None:
    assert encode_complete(2**53 - 1) == b'{"type":"complete","id":9007199254740991}'


def test_encode_error_exact_bytes() -> None:
    assert encode_error(3, ErrorCode.DUPLICATE_ID, "id 3 is open") == (
        b'{"type":"error","id":3,"error":{"code":"duplicate_id","message":"id 3 is open"}}'
    )
    assert encode_error(None, ErrorCode.BAD_FRAME, "nope") == (
        b'{"type":"error","id":null,"error":{"code":"bad_frame","message":"nope"}}'
    )


def test_encode_next_and_next_prefix_exact_bytes() -> None:
    assert next_prefix(5) == b'{"type":"next","id":5,"data":'
    frame = next_frame(next_prefix(5), b'{"user_count":1}')
    assert frame[2:] == b'{"type":"next","id":5,"data":{"user_count":1}}' and frame[1] == 46
    item = encode_json({"kind": "join", "seq": 1})
    assert next_frame(next_prefix(5), item)[2:] == next_prefix(5) + item + b"}"


def test_encode_json_is_compact_utf8_without_ascii_escapes() -> None:
    assert encode_json({"a": [1, 2], "b": "é😀"}) == '{"a":[1,2],"b":"é😀"}'.encode()
    assert encode_json('quote " and \\ and \n') == b'"quote \\" and \\\\ and \\n"'


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_encode_json_never_emits_nan_or_infinity(value: float) -> None:
    # NaN and Infinity are not JSON; orjson writes null for them, so clients can parse it.
    assert json.loads(encode_json({"x": value}), parse_constant=pytest.fail) == {"x": None}


def test_every_error_code_encodes() -> None:
    for code in ErrorCode:
        decoded = json.loads(encode_error(1, code, "m"))
        assert decoded == {"type": "error", "id": 1, "error": {"code": code.value, "message": "m"}}


# --- properties ---------------------------------------------------------------------------


def check_only_bad_frame(text: str | bytes) -> None:
    """parse_frame returns a frame or raises BadFrame, and the error frame is encodable."""
    try:
        parse_frame(text)
    except BadFrame as exc:
        assert exc.frame_id is None or (isinstance(exc.frame_id, int) and exc.frame_id > 0)
        frame = json.loads(encode_error(exc.frame_id, exc.code, exc.message))
        assert frame["error"]["code"] == "bad_frame"


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parse_frame_raises_only_bad_frame_on_arbitrary_text(text: str) -> None:
    check_only_bad_frame(text)


@settings(max_examples=300, deadline=None)
@given(st.binary())
def test_parse_frame_raises_only_bad_frame_on_arbitrary_bytes(data: bytes) -> None:
    check_only_bad_frame(data)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
frame_types = st.sampled_from(
    [
        *("request", "fire", "stream", "channel", "next", "complete", "cancel", "request_n"),
        *("response", "error", "bogus"),
    ]
)
field_values = json_values | st.integers(min_value=-3, max_value=2**54)
frame_like = st.fixed_dictionaries(
    {},
    optional={
        "type": frame_types | json_values,
        "id": field_values,
        "route": st.text(max_size=10) | json_values,
        "data": json_values,
        "credit": field_values,
        "n": field_values,
    },
)


@settings(max_examples=200, deadline=None)
@given(json_values | frame_like)
def test_parse_frame_raises_only_bad_frame_on_arbitrary_json(value: Any) -> None:
    check_only_bad_frame(json.dumps(value))


@settings(max_examples=150, deadline=None)
@given(frame_like)
def test_a_bad_frame_echoes_exactly_the_usable_id(value: dict[str, Any]) -> None:
    try:
        parse_frame(json.dumps(value))
    except BadFrame as exc:
        raw = value.get("id")
        usable = isinstance(raw, int) and not isinstance(raw, bool) and 0 < raw < 2**53
        if value.get("type") == "fire":
            assert exc.frame_id is None  # a fire has no id to name
        else:
            assert exc.frame_id == (raw if usable else None)


def test_lone_surrogate_in_type_gives_an_encodable_bad_frame() -> None:
    # JSON may escape a lone surrogate; the error message must still encode as UTF-8.
    check_only_bad_frame('{"type":"\\ud800","id":1}')
