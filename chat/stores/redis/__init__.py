"""The Redis backend: many nodes, one chat (docs/cluster.md).

- :mod:`~chat.stores.redis.store` — the log store (streams, the events channel, the directory);
- :mod:`~chat.stores.redis.presence` — usernames, memberships, online users, node leases;
- :mod:`~chat.stores.redis.bridge` — ``PUBLISH`` into a channel;
- :mod:`~chat.stores.redis.scripts` — the Lua scripts, each one atomic step;
- :mod:`~chat.stores.redis._resp` — the connection (RESP parsed by hiredis).
"""

from chat.stores.redis.store import DEFAULT_CACHE, DEFAULT_RETENTION, RedisLogStore, parse_url

__all__ = ["DEFAULT_CACHE", "DEFAULT_RETENTION", "RedisLogStore", "parse_url"]
