"""The server's settings, shared by the twistd plugin, the tests and the benchmarks."""

from __future__ import annotations

import attrs

from chat.protocol.interactions import DEFAULT_MAX_OPEN


@attrs.frozen
class Settings:
    """Every tunable of one server; the defaults are PROTOCOL.md's limits."""

    listen: tuple[str, ...] = ("tcp:8080",)
    store: str = "memory"
    retention: int = 10_000  # items kept per log
    max_frame_size: int = 64 * 1024  # bytes; a bigger frame closes the connection with 1009
    max_content_length: int = 4096  # code points of a message's content
    max_interactions: int = DEFAULT_MAX_OPEN  # open interactions per connection
