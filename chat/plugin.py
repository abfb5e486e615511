"""The ``twistd chat`` command line: options and the service they build.

The drop-in ``twisted/plugins/chat_plugin.py`` only points here, so that Twisted's plugin scan
stays cheap and this code is imported only when ``twistd chat`` actually runs.
"""

from __future__ import annotations

from typing import Any

from twisted.python import usage

from chat.auth import read_secret
from chat.logs import JSON_OBSERVER
from chat.settings import Settings, parse_duration


def _keys(path: str) -> tuple[str, ...]:
    """The API keys in ``path``: one per line, blank lines and ``#`` comments skipped."""
    with open(path, encoding="utf-8") as lines:
        keys = tuple(k.strip() for k in lines if k.strip() and not k.lstrip().startswith("#"))
    if not keys:
        raise ValueError("no key in the file")
    return keys


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(f"must be a positive integer, got {value}")
    return number


def _count(value: str) -> int:
    """A whole number of 0 or more (0 turns a limit off)."""
    number = int(value)
    if number < 0:
        raise ValueError(f"must be 0 or more, got {value}")
    return number


def _seconds(value: str) -> float:
    number = float(value)
    if number < 0:
        raise ValueError(f"must be 0 or more seconds, got {value}")
    return number


def _age(value: str) -> float:
    return parse_duration(value)


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
            "Where logs are stored: sqlite:PATH (durable; WAL mode), memory (gone at exit), or "
            "redis://HOST:PORT/DB (shared by many nodes; see docs/cluster.md).",
        ],
        ["redis-prefix", None, "chat:", "Redis: prefix of every key and pub/sub channel."],
        [
            "redis-publish-prefix",
            None,
            "chat:publish:",
            "Redis: PUBLISH <prefix><channel> text appends text to that channel "
            "(from redis:bridge).",
        ],
        [
            "redis-lease",
            None,
            10.0,
            "Redis: seconds after which a node that stopped renewing its lease is declared "
            "dead and its users leave their channels.",
            _seconds,
        ],
        [
            "retention",
            None,
            None,
            "Items kept per channel and inbox log [default: 100000 for sqlite, 10000 for redis "
            "and memory].",
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
        [
            "message-rate",
            None,
            20_000,
            "message requests per second per connection (0: off).",
            _seconds,
        ],
        [
            "message-burst",
            None,
            50_000,
            "message requests one connection may send at once.",
            _positive,
        ],
        ["max-channels-per-user", None, 128, "Channels one user may be in (0: no limit).", _count],
        ["max-connections-per-ip", None, 0, "Connections from one address (0: no limit).", _count],
        [
            "login-timeout",
            None,
            10.0,
            "Seconds a connection may stay without logging in "
            "before it is closed with 1008 (0: no limit).",
            _seconds,
        ],
        ["ping-interval", None, 20, "Seconds between WebSocket pings (0: no pings).", _count],
        ["ping-timeout", None, 10, "Seconds to wait for a pong before closing.", _count],
        [
            "auth",
            None,
            "open",
            "open (usernames are claims) or token (login needs a token "
            "signed with --secret-file; issue them with chat-token).",
        ],
        ["secret-file", None, None, "File holding the secret that signs login tokens."],
        [
            "max-auth-failures",
            None,
            5,
            "Failed token logins before the connection is closed.",
            _positive,
        ],
        [
            "api-key-file",
            None,
            None,
            "File of Bearer keys (one per line) for POST /api/publish;"
            " without it the publish API is off.",
        ],
        [
            "log-format",
            None,
            "text",
            "text (twistd's) or json (one JSON object per event on standard output).",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["allowed-origin"] = []

    def opt_listen(self, endpoint: str) -> None:
        """Listen on this Twisted endpoint (repeatable; default tcp:8080),
        e.g. tcp:8080:interface=127.0.0.1 or ssl:8443:privateKey=key.pem:certKey=cert.pem."""
        self["listen"].append(endpoint)

    def opt_allowed_origin(self, pattern: str) -> None:
        """Accept browser pages from origins matching this pattern (repeatable), e.g.
        https://*.example.com. Default: only this host, and clients sending no Origin."""
        self["allowed-origin"].append(pattern)

    def postOptions(self) -> None:
        from chat.server import UnknownStore, check_store

        try:
            check_store(self["store"])
        except UnknownStore as exc:
            raise usage.UsageError(str(exc)) from None
        if self["sync"] not in ("full", "normal"):
            raise usage.UsageError(f"--sync must be full or normal, got {self['sync']!r}")
        if self["auth"] not in ("open", "token"):
            raise usage.UsageError(f"--auth must be open or token, got {self['auth']!r}")
        if self["auth"] == "token" and not self["secret-file"]:
            raise usage.UsageError("--auth token needs --secret-file")
        if self["log-format"] not in ("text", "json"):
            raise usage.UsageError(f"--log-format must be text or json, got {self['log-format']!r}")
        self.secret = self._read(self["secret-file"], read_secret) if self["secret-file"] else b""
        self.api_keys = self._read(self["api-key-file"], _keys) if self["api-key-file"] else ()
        if self["log-format"] == "json" and self.parent is not None:
            self.parent["logger"] = JSON_OBSERVER  # twistd makes its log observer from this

    @staticmethod
    def _read(path: str, parse: Any) -> Any:
        try:
            return parse(path)
        except (OSError, ValueError) as exc:
            raise usage.UsageError(f"cannot use {path}: {exc}") from None

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
            message_rate=self["message-rate"],
            message_burst=self["message-burst"],
            max_channels_per_user=self["max-channels-per-user"],
            max_connections_per_ip=self["max-connections-per-ip"],
            login_timeout=self["login-timeout"],
            ping_interval=self["ping-interval"],
            ping_timeout=self["ping-timeout"],
            auth=self["auth"],
            secret=self.secret,
            max_auth_failures=self["max-auth-failures"],
            allowed_origins=tuple(self["allowed-origin"]),
            api_keys=self.api_keys,
            redis_prefix=self["redis-prefix"],
            redis_publish_prefix=self["redis-publish-prefix"],
            redis_lease=self["redis-lease"],
        )


def makeService(options: Options) -> Any:
    from chat.server import make_service
    from chat.stores.sqlite import StoreOpenError

    try:
        return make_service(options.settings())
    except StoreOpenError as exc:
        # One clear line and a non-zero exit, not a traceback: twistd prints a SystemExit's text.
        raise SystemExit(f"twistd chat: {exc}") from None
