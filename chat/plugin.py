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


def _age(value: str) -> float:
    from chat.stores.sqlite import parse_age

    return parse_age(value)


class Options(usage.Options):
    """Command-line options of ``twistd chat``."""

    synopsis = "[options]"
    longdesc = (
        "A real-time chat and pub/sub server speaking the JSON protocol chat.v1.json over "
        "WebSocket at /ws, with a browser page at /. Every outbound stream is paced by TCP "
        "backpressure: slow clients are neither disconnected nor buffered."
    )
    optParameters = [
        [
            "store",
            "s",
            "sqlite:chat.db",
            "Where logs are stored: sqlite:PATH (durable; WAL mode) or memory (gone at exit).",
        ],
        [
            "retention",
            None,
            None,
            "Items kept per channel and inbox log [default: 100000 for sqlite, 10000 for memory].",
            _positive,
        ],
        [
            "retention-age",
            None,
            None,
            "Also drop items older than this, e.g. 7d, 12h, 30m, 45s [default: no age limit].",
            _age,
        ],
        [
            "sync",
            None,
            "full",
            "SQLite commit durability: full (survives power loss) or normal (survives a crash "
            "of the server, not of the machine; faster).",
        ],
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
        from chat.server import UnknownStore, check_store

        try:
            check_store(self["store"])
        except UnknownStore as exc:
            raise usage.UsageError(str(exc)) from None
        if self["sync"] not in ("full", "normal"):
            raise usage.UsageError(f"--sync must be full or normal, got {self['sync']!r}")

    def settings(self) -> Settings:
        return Settings(
            listen=tuple(self["listen"] or ["tcp:8080"]),
            store=self["store"],
            retention=self["retention"],
            retention_age=self["retention-age"],
            sync=self["sync"],
            max_frame_size=self["max-frame-size"],
            max_content_length=self["max-content-length"],
            max_interactions=self["max-interactions"],
        )


def makeService(options: Options) -> Any:
    from chat.server import make_service
    from chat.stores.sqlite import StoreOpenError

    try:
        return make_service(options.settings())
    except StoreOpenError as exc:
        # One clear line and a non-zero exit, not a traceback: twistd prints a SystemExit's text.
        raise SystemExit(f"twistd chat: {exc}") from None
