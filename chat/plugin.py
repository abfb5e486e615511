"""The ``twistd chat`` command line: options and the service they build.

The drop-in ``twisted/plugins/chat_plugin.py`` only points here, so that Twisted's plugin scan
stays cheap and this code is imported only when ``twistd chat`` actually runs.
"""

from __future__ import annotations

from typing import Any

from twisted.python import usage

from chat.settings import Settings


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(f"must be a positive integer, got {value}")
    return number


class Options(usage.Options):
    """Command-line options of ``twistd chat``."""

    synopsis = "[options]"
    longdesc = (
        "A real-time chat and pub/sub server speaking the JSON protocol chat.v1.json over "
        "WebSocket at /ws, with a browser page at /. Every outbound stream is paced by TCP "
        "backpressure: slow clients are neither disconnected nor buffered."
    )
    optParameters = [
        ["store", "s", "memory", "Where logs are stored: memory (the only store so far)."],
        ["retention", None, 10_000, "Items kept per channel and inbox log.", _positive],
        [
            "max-frame-size",
            None,
            65_536,
            "Largest WebSocket frame accepted, in bytes; bigger closes with 1009.",
            _positive,
        ],
        [
            "max-content-length",
            None,
            4096,
            "Longest message content, in Unicode code points.",
            _positive,
        ],
        [
            "max-interactions",
            None,
            64,
            "Open interactions allowed per connection.",
            _positive,
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, endpoint: str) -> None:
        """Listen on this Twisted endpoint (repeatable; default tcp:8080),
        e.g. tcp:8080:interface=127.0.0.1 or ssl:8443:privateKey=key.pem:certKey=cert.pem."""
        self["listen"].append(endpoint)

    def postOptions(self) -> None:
        if self["store"] != "memory":
            raise usage.UsageError(f"unknown store {self['store']!r}; available: memory")

    def settings(self) -> Settings:
        return Settings(
            listen=tuple(self["listen"] or ["tcp:8080"]),
            store=self["store"],
            retention=self["retention"],
            max_frame_size=self["max-frame-size"],
            max_content_length=self["max-content-length"],
            max_interactions=self["max-interactions"],
        )


def makeService(options: Options) -> Any:
    from chat.server import make_service

    return make_service(options.settings())
