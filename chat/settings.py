"""The server's settings: every tunable, its default, and the ``twistd chat`` option for it.

Each field carries an :class:`Option` in its metadata: the option's name, how its text is
parsed and checked, and its help line. :mod:`chat.plugin` builds the whole command line from
these fields, so a new option is one field here (``twistd chat --help`` lists them all), and
the tests, the benchmarks and the plugin share one set of defaults.

A parser raises :class:`ValueError` with a message that says what is allowed; the plugin puts
the option's name in front of it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import attrs

from chat.protocol.interactions import DEFAULT_MAX_OPEN

SYNC_MODES: Final = ("full", "normal")
AUTH_MODES: Final = ("open", "token")
LOG_FORMATS: Final = ("text", "json")


@attrs.frozen
class Option:
    """How one setting is given on the command line."""

    name: str  # the option, without the leading "--"
    help: str
    parse: Callable[[str], Any] = str
    repeatable: bool = False  # each use adds one value to a tuple
    default_text: str | None = None  # what --help shows as the default, when not the value
    short: str | None = None


def option(default: Any, name: str, help: str, **kwargs: Any) -> Any:
    """An attrs field whose metadata describes its command-line option."""
    return attrs.field(default=default, metadata={"option": Option(name, help, **kwargs)})


def secret_option(default: Any, name: str, help: str, **kwargs: Any) -> Any:
    """Like :func:`option`, for a value that must never appear in a repr or a log line."""
    return attrs.field(
        default=default, repr=False, metadata={"option": Option(name, help, **kwargs)}
    )


# Parsers: text of an option -> value, or ValueError saying what is allowed.


def _number(cast: Callable[[str], Any], low: float, rule: str) -> Callable[[str], Any]:
    """A parser of numbers of at least ``low`` (finite), saying ``rule`` when refused."""

    def parse(text: str) -> Any:
        try:
            number = cast(text)
        except ValueError:
            raise ValueError(f"must be {rule}, got {text!r}") from None
        if not low <= number < float("inf"):
            raise ValueError(f"must be {rule}, got {text!r}")
        return number

    parse.__doc__ = f"{rule[0].upper()}{rule[1:]}."
    return parse


positive = _number(int, 1, "a whole number of 1 or more")
count = _number(int, 0, "a whole number of 0 or more (0 turns a limit off)")
seconds = _number(float, 0, "a number of seconds, 0 or more")
rate = _number(float, 0, "a number per second, 0 or more (0 turns a limit off)")


def one_of(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}, got {text!r}")
        return text

    parse.__doc__ = f"One of {', '.join(allowed)}."
    return parse


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``1h``, ``7d`` as seconds (token lifetimes, retention ages)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    scale = units.get(text[-1:], 0)
    number = text[:-1] if scale else text
    try:
        value = float(number) * (scale or 1)
    except ValueError:
        raise ValueError(f"not a duration: {text!r} (try 45s, 30m, 12h, 7d)") from None
    if not value > 0 or value == float("inf"):
        raise ValueError(f"a duration must be positive, got {text!r} (try 45s, 30m, 12h, 7d)")
    return value


def check_store(text: str) -> str:
    """``memory``, ``sqlite[:PATH]`` or ``redis://HOST:PORT/DB``."""
    from chat.stores.backend import check_store_description

    check_store_description(text)
    return text


def check_endpoint(text: str) -> str:
    """A Twisted server endpoint description."""
    from chat.web.endpoints import check_endpoint_description

    check_endpoint_description(text)
    return text


def read_secret_file(path: str) -> bytes:
    from chat.auth import read_secret

    return read_secret(path)


def read_api_keys(path: str) -> tuple[str, ...]:
    """The API keys in ``path``: one per line, blank lines and ``#`` comments skipped."""
    from chat.auth import check_private_file

    try:
        check_private_file(path)
        with open(path, encoding="utf-8") as lines:
            keys = tuple(k.strip() for k in lines if k.strip() and not k.lstrip().startswith("#"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    if not keys:
        raise ValueError(f"no key in {path}")
    bad = [k for k in keys if not k.isascii() or not k.isprintable() or " " in k]
    if bad:
        raise ValueError(f"{path}: keys must be printable ASCII without spaces")
    return keys


def existing_directory_of(path: str) -> str:
    """A file path whose directory exists (the SQLite file may not exist yet)."""
    parent = Path(path).parent
    if not parent.is_dir():
        raise ValueError(f"the directory {parent} does not exist")
    return path


@attrs.frozen
class Settings:
    """Every tunable of one server; the defaults are PROTOCOL.md's limits."""

    # Where it listens, where it stores.
    listen: tuple[str, ...] = option(
        ("tcp:8080",),
        "listen",
        "Listen on this Twisted endpoint (repeatable), e.g. tcp:8080:interface=127.0.0.1, "
        "ssl:8443:privateKey=key.pem:certKey=cert.pem or unix:/run/chat.sock.",
        parse=check_endpoint,
        repeatable=True,
        default_text="tcp:8080",
    )
    listen_backlog: int = option(
        1024,
        "listen-backlog",
        "Connections the kernel queues before the server accepts them (a reconnect storm "
        "after a restart needs a deep queue); used where the endpoint names no backlog.",
        parse=positive,
    )
    store: str = option(
        "sqlite:chat.db",
        "store",
        "Where logs are stored: sqlite:PATH (durable; WAL mode), memory (gone at exit), or "
        "redis://HOST:PORT/DB (shared by many nodes; see docs/cluster.md).",
        parse=check_store,
        short="s",
    )
    retention: int | None = option(
        None,
        "retention",
        "Items kept per channel and inbox log.",
        parse=positive,
        default_text="100000 for sqlite, 10000 for redis and memory",
    )
    retention_age: float | None = option(
        None,
        "retention-age",
        "Also drop items older than this, e.g. 7d, 12h, 30m, 45s.",
        parse=parse_duration,
        default_text="no age limit",
    )
    cache: int | None = option(
        None,
        "cache",
        "SQLite and Redis: the newest items of each log kept in memory for live delivery "
        "(older ones are read from the store in pages).",
        parse=positive,
        default_text="1000",
    )
    sync: str = option(
        "full",
        "sync",
        "SQLite commit durability: full (survives power loss) or normal (survives a crash "
        "of the server, not of the machine; faster).",
        parse=one_of(*SYNC_MODES),
    )
    redis_prefix: str = option(
        "chat:", "redis-prefix", "Redis: prefix of every key and pub/sub channel."
    )
    redis_publish_prefix: str = option(
        "chat:publish:",
        "redis-publish-prefix",
        "Redis: PUBLISH <prefix><channel> text appends text to that channel (from redis:bridge).",
    )
    redis_lease: float = option(
        10.0,
        "redis-lease",
        "Redis: seconds after which a node that stopped renewing its lease is declared dead "
        "and its users leave their channels.",
        parse=seconds,
    )

    # Sessions [1.1].
    session_linger: float = option(
        120.0,
        "session-linger",
        "Seconds a session outlives its last connection, so that a reload or a network "
        "change resumes it (0: the session ends with its connection, as in protocol 1.0).",
        parse=seconds,
    )
    max_connections_per_session: int = option(
        16,
        "max-connections-per-session",
        "Connections (tabs, devices) that may be attached to one session.",
        parse=positive,
    )
    dedup_window: float = option(
        300.0,
        "dedup-window",
        "Seconds during which a message sent again with the same client_id is recognised "
        "and stored only once.",
        parse=seconds,
    )

    # Limits of one connection.
    max_frame_size: int = option(
        64 * 1024,
        "max-frame-size",
        "Largest WebSocket message accepted, in bytes; bigger closes with 1009.",
        parse=positive,
    )
    max_content_length: int = option(
        4096, "max-content-length", "Longest message content, in Unicode code points.",
        parse=positive,
    )  # fmt: skip
    max_interactions: int = option(
        DEFAULT_MAX_OPEN,
        "max-interactions",
        "Open interactions (requests and streams) allowed per connection.",
        parse=positive,
    )
    message_rate: float = option(
        20_000.0,
        "message-rate",
        "message requests per second per connection (0: off).",
        parse=rate,
    )
    message_burst: int = option(
        50_000, "message-burst", "message requests one connection may send at once.",
        parse=positive,
    )  # fmt: skip
    join_rate: float = option(
        20.0,
        "join-rate",
        "channel.join and channel.leave requests per second per connection (0: off); each "
        "appends an item every member receives.",
        parse=rate,
    )
    join_burst: int = option(
        200,
        "join-burst",
        "channel.join and channel.leave requests one connection may send at once.",
        parse=positive,
    )
    max_channels_per_user: int = option(
        128, "max-channels-per-user", "Channels one user may be in (0: no limit).", parse=count
    )
    max_channels: int = option(
        100_000,
        "max-channels",
        "Channels that may exist on the server; a join that would create one more is "
        "refused (0: no limit).",
        parse=count,
    )
    login_timeout: float = option(
        10.0,
        "login-timeout",
        "Seconds a connection may stay without logging in before it is closed with 1008 "
        "(0: no limit).",
        parse=seconds,
    )
    ping_interval: int = option(
        20, "ping-interval", "Seconds between WebSocket pings (0: no pings).", parse=count
    )
    ping_timeout: int = option(
        10, "ping-timeout", "Seconds to wait for a pong before closing.", parse=count
    )

    # Limits of the whole server and of HTTP.
    max_connections: int = option(
        10_000,
        "max-connections",
        "Open HTTP and WebSocket connections the server accepts at once; more are closed "
        "at once (0: no limit).",
        parse=count,
    )
    max_connections_per_ip: int = option(
        0,
        "max-connections-per-ip",
        "Open HTTP and WebSocket connections from one address (0: no limit).",
        parse=count,
    )
    header_timeout: float = option(
        10.0,
        "header-timeout",
        "Seconds a client has to send a complete HTTP request head (request line and "
        "headers); slower ones get 408 and are dropped (0: no limit).",
        parse=seconds,
    )
    max_body_size: int = option(
        64 * 1024,
        "max-body-size",
        "Largest HTTP request body accepted (POST /api/publish), in bytes; bigger is refused "
        "with 413 before it is read. Other routes take no body.",
        parse=positive,
    )
    body_timeout: float = option(
        10.0,
        "body-timeout",
        "Seconds a client has, once its request head is in, to send the whole request body; "
        "slower ones get 408 and are dropped (0: no limit).",
        parse=seconds,
    )

    # Who may connect.
    auth: str = option(
        "open",
        "auth",
        "open (usernames are claims) or token (login needs a token signed with "
        "--secret-file; issue them with chat-token).",
        parse=one_of(*AUTH_MODES),
    )
    secret: bytes = secret_option(
        b"",
        "secret-file",
        "File holding the secret that signs login tokens (at least 16 bytes; readable by its "
        "owner only).",
        parse=read_secret_file,
        default_text="none",
    )
    max_auth_failures: int = option(
        5,
        "max-auth-failures",
        "Failed token logins before the connection is closed with 1008.",
        parse=positive,
    )
    allowed_origins: tuple[str, ...] = option(
        (),
        "allowed-origin",
        "Accept browser pages from origins matching this pattern (repeatable), e.g. "
        "https://*.example.com.",
        repeatable=True,
        default_text="pages of this host, and clients sending no Origin",
    )
    allowed_hosts: tuple[str, ...] = option(
        (),
        "allowed-host",
        "A host name (or host:port) this server is reached by (repeatable); when given, "
        "requests whose Host header names another are refused, which stops DNS-rebinding "
        "pages.",
        repeatable=True,
        default_text="any",
    )
    api_keys: tuple[str, ...] = secret_option(
        (),
        "api-key-file",
        "File of Bearer keys (one per line) for POST /api/publish; without it the publish API "
        "is off.",
        parse=read_api_keys,
        default_text="none",
    )
    log_format: str = option(
        "text",
        "log-format",
        "text (twistd's) or json (one JSON object per event on standard output).",
        parse=one_of(*LOG_FORMATS),
    )


def options() -> list[tuple[attrs.Attribute[Any], Option]]:
    """Every setting that has a command-line option, in declaration order."""
    found = []
    for field in attrs.fields(Settings):
        spec = field.metadata.get("option")
        if isinstance(spec, Option):
            found.append((field, spec))
    return found


def options_table() -> str:
    """The Markdown table of every option, for the README (tests/test_docs.py checks that the
    README holds exactly this, so the documentation cannot drift from the options)."""
    rows = ["| option | default | meaning |", "|---|---|---|"]
    for field, spec in options():
        value = spec.default_text
        if value is None:
            value = "none" if field.default in (None, "", b"", ()) else str(field.default)
        meaning = spec.help.replace("|", "\\|")
        rows.append(f"| `--{spec.name}` | {value} | {meaning} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(options_table())
