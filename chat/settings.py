"""The server's settings, shared by the twistd plugin, the tests and the benchmarks."""

from __future__ import annotations

import attrs

from chat.protocol.interactions import DEFAULT_MAX_OPEN


@attrs.frozen
class Settings:
    """Every tunable of one server; the defaults are PROTOCOL.md's limits."""

    listen: tuple[str, ...] = ("tcp:8080",)
    store: str = "memory"  # "memory", "sqlite:PATH" (twistd's default), "redis://HOST:PORT/DB"
    retention: int | None = None  # items kept per log; None: the store's default
    retention_age: float | None = None  # seconds an item is kept; None: no age limit
    sync: str = "full"  # SQLite: "full" (durable on power loss) or "normal" (on process crash)
    max_frame_size: int = 64 * 1024  # bytes; a bigger frame closes the connection with 1009
    max_content_length: int = 4096  # code points of a message's content
    max_interactions: int = DEFAULT_MAX_OPEN  # open interactions per connection
    # Limits of issue 8; 0 disables a limit.
    message_rate: float = 20_000.0  # `message` requests per second per connection (token bucket)
    message_burst: int = 50_000  # bucket size: messages one connection may send at once
    max_channels_per_user: int = 128
    max_connections_per_ip: int = 0  # off unless configured
    login_timeout: float = 10.0  # seconds a connection may stay without logging in
    ping_interval: int = 20  # seconds between WebSocket pings (Autobahn: whole seconds)
    ping_timeout: int = 10  # seconds to wait for the pong before closing
    auth: str = "open"  # "open": usernames are claims; "token": login needs a signed token
    secret: bytes = b""  # HMAC key of login tokens (--secret-file)
    max_auth_failures: int = 5  # failed token logins before the connection is closed (1008)
    allowed_origins: tuple[str, ...] = ()  # empty: same host, or no Origin header
    api_keys: tuple[str, ...] = ()  # Bearer keys of POST /api/publish; empty: API off
    # Redis (--store redis://...): many nodes share one Redis; see docs/cluster.md.
    redis_prefix: str = "chat:"  # prefix of every key and pub/sub channel of the store
    redis_publish_prefix: str = "chat:publish:"  # PUBLISH <prefix><channel> text: the bridge
    redis_lease: float = 10.0  # seconds after which a silent node is declared dead


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
    if value <= 0:
        raise ValueError(f"a duration must be positive, got {text!r}")
    return value
