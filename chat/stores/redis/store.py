"""The Redis store: logs shared by many server nodes (``--store redis://HOST:PORT/DB``).

Theory of operation
-------------------

- **Appends are one Lua script** (:data:`~chat.stores.redis.scripts.APPEND`): ``HINCRBY`` the
  log's seq, keep ``ts`` monotonic per log, splice ``"seq"`` and ``"ts"`` into the item's JSON
  (encoded once, on the node that appends), ``XADD`` it to the log's stream with the explicit ID
  ``<seq>-0`` (trimmed to about ``retention`` entries), and ``PUBLISH`` the finished bytes on
  the events channel. A private message is added to both inboxes by the same script, and a
  ``client_id``'s dedup record is set by it too, so no node can see half of either.
- **Every node hears every append** on one pub/sub channel (``<prefix>events``), on a
  connection of its own, and hands the item to the cached base (ring, ``last_seq``, wake), so
  fan-out on a node reads from memory and no node ever polls. The node that appended does the
  same with the script's answer (whichever arrives first wins; the base ignores the other).
- **Missed notifications** (the subscriber connection dropped): on every (re)connection the
  node subscribes first, then reloads the seq of every log, the channels and the known users
  (``resync``). A log whose seq moved meanwhile has its readers woken; the ring does not hold
  the newest items, so ``cached`` answers ``None`` and the feed reads them from the stream in
  pages (``XRANGE ... COUNT``, sized to about ``max_bytes``).
- **Directory**: channels and known users are Redis sets, mirrored in memory on every node
  (loaded at start, kept current by ``c``/``u`` events), so ``has_channel``/``knows_user`` stay
  synchronous. Entries that could not be written (Redis away) are retried at reconnection.
- **Epoch**: ``SET <prefix>epoch <uuid> NX`` when a store is first used. A Redis that lost its
  data gets a new epoch at the next resync, which voids the clients' ``since`` positions.
- **Failure**: while Redis is unreachable every append and read fails at once with
  :class:`~chat.stores.errors.StoreUnavailable`; the connections come back by themselves.
"""

from __future__ import annotations

import urllib.parse
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from twisted.internet.defer import Deferred, FirstError, fail, gatherResults, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from chat.protocol.frames import encode_json
from chat.stores._cached import CachedLogStore
from chat.stores.directory import Table
from chat.stores.errors import StoreClosed, StoreUnavailable
from chat.stores.interface import Appended, Dedup, ILogStore, LogItem
from chat.stores.memory import DEFAULT_DEDUP_WINDOW, wall_clock_ms
from chat.stores.redis._resp import RedisConnection, RespProtocol
from chat.stores.redis.scripts import APPEND, SAVE_READ, load_scripts

DEFAULT_RETENTION: Final = 10_000
DEFAULT_CACHE: Final = 1_000
DEFAULT_PREFIX: Final = "chat:"

logger = Logger()


def parse_url(url: str) -> tuple[str, int, int]:
    """``redis://HOST:PORT/DB`` as (host, port, db); port 6379 and db 0 by default."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "redis":
        raise ValueError(f"a Redis store is redis://HOST:PORT/DB, got {url!r}")
    path = parts.path.strip("/")
    try:
        db = int(path) if path else 0
        port = parts.port or 6379
    except ValueError:
        raise ValueError(f"a Redis store is redis://HOST:PORT/DB, got {url!r}") from None
    return parts.hostname or "127.0.0.1", port, db


EventHandler = Callable[[bytes], None]


@implementer(ILogStore)
class RedisLogStore(CachedLogStore):
    """An :class:`ILogStore` in Redis, shared by every node that names the same Redis."""

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        prefix: str = DEFAULT_PREFIX,
        retention: int = DEFAULT_RETENTION,
        cache: int = DEFAULT_CACHE,
        reply_timeout: float = 3.0,
        reactor: Any = None,
        clock_ms: Callable[[], int] = wall_clock_ms,
        dedup_window: float = DEFAULT_DEDUP_WINDOW,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.init_logs(retention, cache)
        self.url = url
        self.host, self.port, self.db = parse_url(url)
        self.prefix = prefix
        self.clock_ms = clock_ms
        self.dedup_window_ms = max(1, int(dedup_window * 1000))
        self.reactor = reactor
        self.epoch = ""
        self.events_channel = prefix + "events"
        self.load_directory()
        self._unsaved: dict[tuple[Table, str], None] = {}  # (set, name) to write again
        self._handlers: dict[int, EventHandler] = {
            ord("i"): self._heard_item,
            ord("c"): self._heard_channel,
            ord("u"): lambda data: self.learn_user(data.decode()),
        }
        self.resync_hooks: list[Callable[[], Deferred[Any]]] = []
        self.patterns: dict[bytes, Callable[[bytes, bytes], None]] = {}  # PSUBSCRIBE
        self.average_item = 256.0  # bytes, for sizing XRANGE pages
        self.redis = RedisConnection(
            reactor,
            self.host,
            self.port,
            self.db,
            "commands",
            reply_timeout,
            on_connect=load_scripts,
        )
        self.subscriber = RedisConnection(
            reactor,
            self.host,
            self.port,
            self.db,
            "subscriber",
            reply_timeout,
            on_connect=self._subscribed,
        )
        self._ready_waiters: list[Deferred[None]] = []
        self.is_ready = False
        self.closed = False
        self.resyncs = 0  # completed resyncs (tests wait on it)

    def key(self, name: str) -> str:
        return self.prefix + name

    # Starting, and coming back after Redis was away

    def start(self) -> Deferred[None]:
        """Connect; fires once this node has loaded the store's state (retries until then)."""
        d: Deferred[None] = Deferred()
        if self.is_ready:
            d.callback(None)
            return d
        self._ready_waiters.append(d)
        self.redis.start()
        self.subscriber.start()
        return d

    def _subscribed(self, protocol: RespProtocol) -> Deferred[Any]:
        """A new subscriber connection: subscribe, then reload what may have been missed."""
        protocol.push = self._pushed
        d = protocol.execute("SUBSCRIBE", self.events_channel)
        for pattern in self.patterns:
            protocol.execute("PSUBSCRIBE", pattern).addErrback(lambda _: None)
        d.addCallback(lambda _: self._resync_soon(0.0))
        return d

    def _resync_soon(self, delay: float) -> None:
        self.reactor.callLater(delay, self._resync)

    def _resync(self) -> None:
        if self.closed or (not self.subscriber.connected and self.is_ready):
            return

        def failed(reason: Failure) -> None:
            if not reason.check(StoreUnavailable):
                logger.failure("Redis store: resync failed", reason)
            self._resync_soon(0.2)  # the command connection may come up a moment later

        self.resync().addErrback(failed)

    def resync(self) -> Deferred[None]:
        """Reload the epoch, every log's seq, the channels and users; then run the hooks."""
        self.redis.send("SET", self.key("epoch"), uuid.uuid4().hex, "NX")
        replies = gatherResults(
            [
                self.redis.execute("GET", self.key("epoch")),
                self.redis.execute("HGETALL", self.key("seq")),
                self.redis.execute("SMEMBERS", self.key("channels")),
                self.redis.execute("SMEMBERS", self.key("users")),
            ],
            consumeErrors=True,
        )

        async def run() -> None:
            try:
                raw_epoch, pairs, channels, users = await replies
            except FirstError as exc:
                exc.subFailure.raiseException()
            epoch = raw_epoch.decode()
            if self.epoch and epoch != self.epoch:
                logger.warn("Redis store: the store was emptied (new epoch); forgetting its logs")
                for state in self.all_states().values():
                    state.last = 0
                    state.ring.clear()
                self.forget_directory()
            self.epoch = epoch
            for name in channels:
                self.learn_channel(name.decode())
            for name in users:
                self.learn_user(name.decode())
            lasts = {pairs[i].decode(): int(pairs[i + 1]) for i in range(0, len(pairs), 2)}
            for (table, name), _ in list(self._unsaved.items()):
                self._save(table, name)
            for hook in self.resync_hooks:
                await hook()
            self.resyncs += 1
            self.is_ready = True
            for key, last in lasts.items():
                self.moved(key, last)
            waiters, self._ready_waiters = self._ready_waiters, []
            for waiter in waiters:
                waiter.callback(None)

        return Deferred.fromCoroutine(run())

    # Events from other nodes (and our own)

    def _pushed(self, message: Any) -> None:
        if not isinstance(message, list) or not message:
            return
        kind = message[0]
        if kind == b"message" and len(message) == 3:
            data = message[2]
            handler = self._handlers.get(data[0]) if data else None
            if handler is not None:
                try:
                    handler(data[1:])
                except Exception:
                    logger.failure("Redis store: bad event {data!r}", data=data[:200])
        elif kind == b"pmessage" and len(message) == 4:
            callback = self.patterns.get(message[1])
            if callback is not None:
                try:
                    callback(message[2], message[3])
                except Exception:
                    logger.failure(
                        "Redis store: handling a PUBLISH on {channel!r} failed", channel=message[2]
                    )

    def on_event(self, kind: str, handler: EventHandler) -> None:
        """Call ``handler(data)`` for each event ``kind + data`` published on the channel."""
        self._handlers[ord(kind)] = handler

    def publish_event(self, kind: str, data: str) -> Deferred[Any]:
        return self.redis.execute("PUBLISH", self.events_channel, kind + data)

    def psubscribe(self, pattern: str, callback: Callable[[bytes, bytes], None]) -> None:
        """Call ``callback(channel, message)`` for every PUBLISH on channels matching."""
        key = pattern.encode()
        self.patterns[key] = callback
        if self.subscriber.protocol is not None:
            self.subscriber.protocol.execute("PSUBSCRIBE", key).addErrback(lambda _: None)

    def _heard_channel(self, data: bytes) -> None:
        self.learn_channel(data.decode())

    def _heard_item(self, data: bytes) -> None:
        key, seq, _ts, payload = data.split(b"\n", 3)
        self.took(key.decode(), [LogItem(int(seq), payload)])

    # Appending

    def append(
        self,
        log: str,
        fields: Mapping[str, Any],
        copy_to: str | None = None,
        dedup: Dedup | None = None,
    ) -> Deferred[Appended]:
        if self.closed:
            return fail(StoreClosed("the Redis store is closed"))
        item = dict(fields)
        item.pop("seq", None)
        item.pop("ts", None)
        dedup_key = ""
        if dedup is not None:
            dedup_key = self.key(f"dedup:{dedup.sender}\n{copy_to or log}\n{dedup.client_id}")
        keys = (
            self.key("seq"),
            self.key("ts"),
            self.key("log:" + log),
            self.key("log:" + (copy_to or log)),
            dedup_key,
        )
        args = (
            log,
            encode_json(item),
            self.clock_ms(),
            self.retention,
            self.events_channel,
            copy_to or "",
            self.dedup_window_ms,
        )

        def appended(reply: list[Any]) -> Appended:
            if reply[0] == b"d":
                seq, ts = reply[1].split()
                return Appended(int(seq), int(ts), duplicate=True)
            seq, ts = int(reply[0]), int(reply[1])
            self.took(log, [LogItem(seq, reply[2])])
            if copy_to is not None:
                self.took(copy_to, [LogItem(int(reply[3]), reply[4])])
            return Appended(seq, ts)

        return APPEND(self.redis, keys, args).addCallback(appended)

    # Reading old items, in pages

    def fetch(self, log: str, low: int, high: int, max_bytes: int) -> Deferred[Sequence[LogItem]]:
        if self.closed:
            return fail(StoreClosed("the Redis store is closed"))
        count = max(1, min(high - low + 1, int(max_bytes / self.average_item) + 1))
        d = self.redis.execute(
            "XRANGE", self.key("log:" + log), f"{low}-0", f"{high}-0", "COUNT", count
        )

        def parsed(entries: list[Any]) -> Sequence[LogItem]:
            items = []
            total = 0
            for entry_id, fields in entries:
                values = dict(zip(fields[::2], fields[1::2], strict=True))
                payload = values[b"p"]
                items.append(LogItem(int(entry_id.split(b"-", 1)[0]), payload))
                total += len(payload)
                if total >= max_bytes:  # COUNT is an estimate: cut like every other page
                    break
            if items:
                self.average_item = 0.8 * self.average_item + 0.2 * (total / len(items))
            return items

        return d.addCallback(parsed)

    # Read positions

    def save_read(self, username: str, log: str, seq: int) -> Deferred[int]:
        if self.closed:
            return fail(StoreClosed("the Redis store is closed"))
        d = SAVE_READ(self.redis, (self.key("reads:" + username),), (log, seq))
        return d.addCallback(int)

    def read_positions(self, username: str) -> Deferred[dict[str, int]]:
        if self.closed:
            return fail(StoreClosed("the Redis store is closed"))
        d = self.redis.execute("HGETALL", self.key("reads:" + username))
        return d.addCallback(
            lambda pairs: {pairs[i].decode(): int(pairs[i + 1]) for i in range(0, len(pairs), 2)}
        )

    # Directory

    def persist_name(self, table: Table, name: str) -> None:
        """A new channel or username: into its Redis set, and announced to every node."""
        self._save(table, name)

    def _save(self, table: Table, name: str) -> None:
        self._unsaved[(table, name)] = None
        added = gatherResults(
            [
                self.redis.execute("SADD", self.key(table), name),
                self.publish_event("c" if table == "channels" else "u", name),
            ],
            consumeErrors=True,
        )

        def saved(_: object) -> None:
            self._unsaved.pop((table, name), None)

        added.addCallbacks(saved, lambda _: None)

    def find_user(self, username: str) -> Deferred[bool]:
        """Whether ``username`` ever logged in, asking Redis when this node has not heard so
        yet (it may have logged in on another node a moment ago)."""
        if self.knows_user(username):
            return succeed(True)

        def found(member: int) -> bool:
            if member:
                self.learn_user(username)
            return bool(member)

        d = self.redis.execute("SISMEMBER", self.key("users"), username)
        return d.addCallback(found)

    # Health and closing

    def ping(self) -> Deferred[None]:
        return self.redis.execute("PING").addCallback(lambda _: None)

    def close(self) -> Deferred[None]:
        """Stop both connections (appends already answered are in Redis); idempotent."""
        if not self.closed:
            self.closed = True
            self.redis.stop()
            self.subscriber.stop()
        return succeed(None)
