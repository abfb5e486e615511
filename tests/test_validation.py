"""Checks of route data (chat.service.validation): each refusal is ``invalid_data``."""

from __future__ import annotations

from typing import Any

import pytest

from chat.protocol.errors import ErrorCode, RouteError
from chat.service import validation as v


def refused(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(RouteError) as info:
        call(*args, **kwargs)
    assert info.value.code is ErrorCode.INVALID_DATA
    assert info.value.message
    return info.value.message


def test_invalid_builds_an_invalid_data_route_error() -> None:
    error = v.invalid("why")
    assert isinstance(error, RouteError)
    assert (error.code, error.message) == (ErrorCode.INVALID_DATA, "why")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, True),
        (-5, True),
        (2**70, True),
        (True, False),
        (False, False),
        (1.0, False),
        ("1", False),
        (None, False),
    ],
)
def test_is_int_excludes_bool_and_float(value: Any, expected: bool) -> None:
    assert v.is_int(value) is expected


# --- obj ----------------------------------------------------------------------------------


def test_obj_returns_the_object_itself() -> None:
    data = {"channel": "general"}
    assert v.obj(data, "channel.join") is data


def test_obj_absent_is_empty_when_optional() -> None:
    assert v.obj(None, "history", optional=True) == {}


def test_obj_absent_is_refused_when_required() -> None:
    message = refused(v.obj, None, "login")
    assert message == '"login" needs "data" to be an object, but it is absent'


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        ([], "array"),
        ("x", "string"),
        (3, "number"),
        (1.5, "number"),
        (True, "boolean"),
        (False, "boolean"),
    ],
)
@pytest.mark.parametrize("optional", [False, True])
def test_obj_names_the_wrong_json_type(data: Any, kind: str, optional: bool) -> None:
    message = refused(v.obj, data, "history", optional=optional)
    assert message == f'"history" needs "data" to be an object, but it is a JSON {kind}'


# --- names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "good", ["a", "A", "0", "_", ".", "-", "alice", "Bob_2.0-x", "x" * 32, "..", "-_-"]
)
def test_valid_names(good: str) -> None:
    assert v.name({"username": good}, "username") == good
    assert v.is_name(good)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "x" * 33,
        "has space",
        "tab\t",
        "line\n",  # a trailing newline must not slip past a $ anchor
        "\nline",
        "émile",
        "\uff21\uff22\uff23",  # fullwidth letters
        "١٢٣",  # Arabic-Indic digits are digits, but not 0-9
        "a#b",
        "@me",
        "a/b",
        "a\x00",
        "\ud800",
        "😀",
    ],
)
def test_invalid_names(bad: str) -> None:
    message = refused(v.name, {"channel": bad}, "channel")
    assert message.startswith('"channel" must be 1-32 characters of A-Z a-z 0-9 _ . -, got ')
    assert not v.is_name(bad)


def test_name_message_truncates_a_long_value() -> None:
    message = refused(v.name, {"channel": "!" * 10_000}, "channel")
    assert len(message) < 150


def test_missing_name() -> None:
    assert refused(v.name, {}, "username") == 'missing field "username"'


@pytest.mark.parametrize(
    ("value", "kind"),
    [(None, "null"), (5, "number"), (True, "boolean"), (["a"], "array"), ({"a": 1}, "object")],
)
def test_name_of_the_wrong_type(value: Any, kind: str) -> None:
    message = refused(v.name, {"user": value}, "user")
    assert message == f'"user" must be a string, got a JSON {kind}'
    assert not v.is_name(value)


# --- content ------------------------------------------------------------------------------


def test_content_up_to_the_limit_in_code_points() -> None:
    assert v.content({"content": "x" * 4096}, 4096) == "x" * 4096
    emoji = "😀" * 4096  # 4096 code points, 16384 UTF-8 bytes
    assert v.content({"content": emoji}, 4096) == emoji
    assert v.content({"content": " "}, 4096) == " "


def test_content_over_the_limit() -> None:
    message = refused(v.content, {"content": "😀" * 4097}, 4096)
    assert message == '"content" is 4097 characters; at most 4096 are allowed'


def test_empty_content() -> None:
    assert refused(v.content, {"content": ""}, 10) == '"content" must not be empty'


def test_missing_content() -> None:
    assert refused(v.content, {"channel": "x"}, 10) == 'missing field "content"'


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (None, "null"),
        (1, "number"),
        (0.5, "number"),
        (False, "boolean"),
        ([], "array"),
        ({}, "object"),
    ],
)
def test_content_of_the_wrong_type(value: Any, kind: str) -> None:
    assert refused(v.content, {"content": value}, 10) == (
        f'"content" must be a string, got a JSON {kind}'
    )


@pytest.mark.parametrize("text", ["\ud800", "half an emoji \ud83d", "\ude00 low"])
def test_content_with_a_lone_surrogate_is_invalid(text: str) -> None:
    # JSON escapes can carry a lone surrogate, which has no UTF-8 form and so could never be
    # stored or delivered as text: refuse it as invalid_data, not as an internal error later.
    refused(v.content, {"content": text}, 4096)


def test_content_with_a_surrogate_pair_escape_is_fine() -> None:
    assert v.content({"content": "\U0001f600"}, 1) == "😀"


# --- optional integers --------------------------------------------------------------------


def test_optional_int_absent_or_null_is_none() -> None:
    assert v.optional_int({}, "limit", 1, 1000) is None
    assert v.optional_int({"limit": None}, "limit", 1, 1000) is None


@pytest.mark.parametrize("value", [1, 500, 1000])
def test_optional_int_in_range(value: int) -> None:
    assert v.optional_int({"limit": value}, "limit", 1, 1000) == value


def test_optional_int_without_upper_bound() -> None:
    assert v.optional_int({"after": 2**60}, "after", 0) == 2**60
    assert v.optional_int({"after": 0}, "after", 0) == 0


@pytest.mark.parametrize("value", [0, -1, 1001, True, False, 1.0, 10.5, "10", [10], {"n": 1}])
def test_optional_int_out_of_range_or_ill_typed(value: Any) -> None:
    message = refused(v.optional_int, {"limit": value}, "limit", 1, 1000)
    assert message.startswith('"limit" must be an integer from 1 to 1000, got ')


def test_optional_int_message_without_upper_bound() -> None:
    message = refused(v.optional_int, {"before": 0}, "before", 1)
    assert message == '"before" must be an integer from 1 or more, got 0'


def test_optional_int_message_truncates_a_long_value() -> None:
    message = refused(v.optional_int, {"limit": "9" * 10_000}, "limit", 1, 1000)
    assert len(message) < 120


def test_name_rule_matches_the_protocol() -> None:
    assert v.NAME_RULE == "1-32 characters of A-Z a-z 0-9 _ . -"
