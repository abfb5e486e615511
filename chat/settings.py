"""The server's settings, shared by the twistd plugin, the tests and the benchmarks."""

from __future__ import annotations

import attrs

from chat.protocol.interactions import DEFAULT_MAX_OPEN


@attrs.frozen
class Settings:
    """Every tunable of one server; the defaults are PROTOCOL.md's limits."""

    listen: tuple[str, ...] = ("tcp:8080",)
    store: str = "memory"  # "memory", or "sqlite:PATH" (twistd's default is sqlite:chat.db)
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
