"""Server text frames (RFC 6455 section 5.2): header forms at the length boundaries.

Each frame is decoded by a tiny parser written here from the RFC, not by the code under test.
"""

from __future__ import annotations

import pytest

from chat.protocol.wsframe import text_frame, text_frame_header


def parse_header(data: bytes) -> tuple[bool, int, bool, int, int]:
    """(fin, opcode, masked, payload length, header length) of the frame starting ``data``."""
    b0, b1 = data[0], data[1]
    fin = bool(b0 >> 7)
    assert (b0 >> 4) & 0b111 == 0, "reserved bits must be 0"
    opcode = b0 & 0x0F
    masked = bool(b1 >> 7)
    length = b1 & 0x7F
    if length == 126:
        return fin, opcode, masked, int.from_bytes(data[2:4], "big"), 4
    if length == 127:
        value = int.from_bytes(data[2:10], "big")
        assert value >> 63 == 0, "the most significant bit of a 64-bit length is 0"
        return fin, opcode, masked, value, 10
    return fin, opcode, masked, length, 2


# (payload length, expected header length): the minimal encoding the RFC requires.
BOUNDARIES = [
    (0, 2),
    (1, 2),
    (125, 2),
    (126, 4),
    (127, 4),
    (65535, 4),
    (65536, 10),
    (65537, 10),
]


@pytest.mark.parametrize(("length", "header_length"), BOUNDARIES)
def test_header_uses_the_minimal_length_form(length: int, header_length: int) -> None:
    header = text_frame_header(length)
    assert len(header) == header_length
    fin, opcode, masked, decoded, consumed = parse_header(header)
    assert (fin, opcode, masked, decoded, consumed) == (True, 0x1, False, length, header_length)


@pytest.mark.parametrize(("length", "header_length"), BOUNDARIES)
def test_text_frame_is_header_then_payload(length: int, header_length: int) -> None:
    payload = b"x" * length
    frame = text_frame(payload)
    fin, opcode, masked, decoded, consumed = parse_header(frame)
    assert fin and opcode == 0x1 and not masked
    assert decoded == length
    assert consumed == header_length
    assert frame[consumed:] == payload


def test_exact_header_bytes_at_each_boundary() -> None:
    assert text_frame_header(125) == b"\x81\x7d"
    assert text_frame_header(126) == b"\x81\x7e\x00\x7e"
    assert text_frame_header(65535) == b"\x81\x7e\xff\xff"
    assert text_frame_header(65536) == b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"


def test_header_of_a_payload_beyond_32_bits() -> None:
    length = 2**32 + 5
    header = text_frame_header(length)
    assert parse_header(header) == (True, 0x1, False, length, 10)


def test_multibyte_utf8_payload_length_counts_bytes() -> None:
    payload = "é😀".encode() * 30  # 6 bytes a repetition: 180 bytes, but 60 characters
    frame = text_frame(payload)
    _, _, _, length, consumed = parse_header(frame)
    assert length == len(payload) == 180
    assert consumed == 4
    assert frame[consumed:].decode() == "é😀" * 30


def test_frames_concatenate_into_a_parsable_stream() -> None:
    payloads = [b"a" * n for n in (0, 125, 126, 65535, 65536, 3)]
    stream = b"".join(text_frame(p) for p in payloads)
    seen = []
    offset = 0
    while offset < len(stream):
        _, _, _, length, consumed = parse_header(stream[offset:])
        start = offset + consumed
        seen.append(stream[start : start + length])
        offset = start + length
    assert seen == payloads


# --- the server's fast path for client frames ---------------------------------------------

import os as _os  # noqa: E402
import struct as _struct  # noqa: E402

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from chat.protocol.wsframe import split_text_frames  # noqa: E402


def client_frame(payload: bytes, first: int = 0x81, masked: bool = True) -> bytes:
    """A client frame built independently of the code under test."""
    n = len(payload)
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head = _struct.pack("!BB", first, mask_bit | n)
    elif n < 65536:
        head = _struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        head = _struct.pack("!BBQ", first, mask_bit | 127, n)
    if not masked:
        return head + payload
    key = _os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


@given(st.lists(st.text(max_size=300), max_size=8))
def test_split_text_frames_returns_every_simple_frame(texts: list[str]) -> None:
    data = b"".join(client_frame(t.encode()) for t in texts)
    payloads, used = split_text_frames(data, 65536)
    assert [p.decode() for p in payloads] == texts and used == len(data)


@pytest.mark.parametrize(
    "stopper",
    [
        client_frame(b"x", first=0x82),  # binary
        client_frame(b"x", first=0x01),  # not final: a fragment
        client_frame(b"x", first=0x89),  # ping
        client_frame(b"x", first=0x88),  # close
        client_frame(b"x", first=0xC1),  # RSV1 set
        client_frame(b"x", masked=False),  # unmasked
        client_frame(b"\xff\xfe"),  # invalid UTF-8: the full parser closes with 1007
        client_frame(b"y" * 70_000),  # 64-bit length: over any limit we use
    ],
)
def test_split_text_frames_stops_at_anything_not_simple(stopper: bytes) -> None:
    before = client_frame(b'{"type":"cancel","id":1}')
    payloads, used = split_text_frames(before + stopper + client_frame(b"after"), 65536)
    assert payloads == [b'{"type":"cancel","id":1}'] and used == len(before)


def test_split_text_frames_waits_for_the_rest_of_an_incomplete_frame() -> None:
    whole = client_frame(b"y" * 2000)
    first = client_frame(b"first")
    assert split_text_frames(first + whole[:-1], 65536) == ([b"first"], len(first))
    assert split_text_frames(whole[:3], 65536) == ([], 0)


def test_split_text_frames_leaves_oversize_frames_to_the_full_parser() -> None:
    payloads, used = split_text_frames(client_frame(b"z" * 1000), 999)
    assert payloads == [] and used == 0
