"""The Redis PUBLISH bridge: ``PUBLISH <prefix><channel> text`` appends ``text`` to ``channel``.

Back-end services that already speak Redis can post to a channel without HTTP. Every node hears
the PUBLISH; only the node holding the bridge leadership (:class:`RedisPresence.is_leader`,
renewed with its lease) appends it, so it is appended once. The message comes from
:data:`BRIDGE_SENDER`, a form no username can take.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from chat.protocol.names import is_name
from chat.stores.redis.presence import RedisPresence
from chat.stores.redis.store import RedisLogStore

logger = Logger()

BRIDGE_SENDER: Final = "redis:bridge"  # no username contains ":"
DEFAULT_PUBLISH_PREFIX: Final = "chat:publish:"

Announce = Callable[[str, str, str], Deferred[Any]]  # (channel, sender, content)


def start_bridge(
    announce: Announce,
    store: RedisLogStore,
    presence: RedisPresence,
    prefix: str,
    max_content_length: int,
) -> None:
    """Append every ``PUBLISH <prefix><channel> text`` to ``channel`` (on the leader only)."""
    raw_prefix = prefix.encode()

    def published(channel_bytes: bytes, message: bytes) -> None:
        if not presence.is_leader:
            return
        channel = channel_bytes[len(raw_prefix) :].decode("utf-8", "replace")
        try:
            content = message.decode("utf-8")
        except UnicodeDecodeError:
            logger.warn(
                "Redis bridge: a PUBLISH to {channel} is not UTF-8; dropped", channel=channel
            )
            return
        if not is_name(channel):
            logger.warn("Redis bridge: {channel!r} is not a channel name; dropped", channel=channel)
            return
        if not content or len(content) > max_content_length:
            logger.warn(
                "Redis bridge: a PUBLISH to {channel} is empty or longer than {most} characters;"
                " dropped",
                channel=channel,
                most=max_content_length,
            )
            return
        store.add_channel(channel)
        announce(channel, BRIDGE_SENDER, content).addErrback(
            lambda failure: logger.failure(
                "Redis bridge: appending to {channel} failed", failure, channel=channel
            )
        )

    store.psubscribe(prefix + "*", published)
