"""The Redis store: logs shared by many server nodes (``--store redis://HOST:PORT/DB``).

Theory of operation
-------------------

- **Appends are one Lua script** (:data:`APPEND`): ``HINCRBY`` the log's seq, keep ``ts``
  monotonic per log, splice ``"seq"`` and ``"ts"`` into the item's JSON (encoded once, on the
  node that appends), ``XADD`` it to the log's stream with the explicit ID ``<seq>-0``
  (trimmed to about ``retention`` entries), and ``PUBLISH`` the finished bytes on the events
  channel. Redis runs scripts one at a time, so seqs are gapless and every node reads the very
  bytes the script stored.
- **Every node hears every append** on one pub/sub channel (``<prefix>events``), on a
  connection of its own. A node puts each item in that log's ring of recent items (like the
  SQLite store), advances its ``last_seq`` and wakes the log's listeners, so fan-out on a node
  reads from memory and no node ever polls. The node that appended does the same with the
  script's answer (whichever of the two arrives first wins; the other is ignored).
- **Missed notifications** (the subscriber connection dropped): on every (re)connection the
  node subscribes first, then reloads the seq of every log, the channels and the known users
  (``resync``). A log whose seq moved meanwhile has its listeners woken; its ring no longer
  covers the newest items, so ``cached`` answers ``None`` and the feed ``read``\\ s them from the
  stream (``XRANGE``). The ring restarts at the next item heard.
- **Directory**: channels and known users are Redis sets, mirrored in memory on every node
  (loaded at start, kept current by ``c``/``u`` events), so ``has_channel``/``knows_user`` stay
  synchronous. Entries that could not be written (Redis away) are retried at reconnection.
- **Epoch**: ``SET <prefix>epoch <uuid> NX`` when a store is first used. A Redis that lost its
  data (restarted without persistence) gets a new epoch at the next resync, which voids the
  clients' ``since`` positions, as for a new SQLite file.
- **Failure**: while Redis is unreachable every append and read fails at once with
  :class:`~chat.stores._redis_client.RedisUnavailable` (the client's request gets
  ``internal``); the connections come back by themselves (backoff at most 1 s).
"""

from __future__ import annotations

import hashlib
import urllib.parse
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from twisted.internet.defer import Deferred, FirstError, fail, gatherResults, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from chat.protocol.frames import encode_json
from chat.stores._redis_client import RedisConnection, RedisError, RedisUnavailable, RespProtocol
from chat.stores.directory import Directory, Table
from chat.stores.interface import ILogStore, Listener, LogItem, history_bounds
from chat.stores.memory import wall_clock_ms
from chat.stores.sqlite import RecentItems

DEFAULT_RETENTION: Final = 10_000
DEFAULT_CACHE: Final = 1_000
DEFAULT_PREFIX: Final = "chat:"

log = Logger()

APPEND: Final = """
local seq = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
local ts = tonumber(ARGV[3])
local prev = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if prev > ts then ts = prev end
local tss = string.format('%d', ts)
local seqs = string.format('%d', seq)
redis.call('HSET', KEYS[2], ARGV[1], tss)
local body = ARGV[2]
local tail = '"seq":' .. seqs .. ',"ts":' .. tss .. '}'
local payload
if body == '{}' then payload = '{' .. tail else payload = string.sub(body, 1, -2) .. ',' .. tail end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], seqs .. '-0', 't', tss, 'p', payload)
redis.call('PUBLISH', ARGV[5], 'i' .. ARGV[1] .. '\\n' .. seqs .. '\\n' .. tss .. '\\n' .. payload)
return {seq, tss, payload}
"""


class Script:
    """A Lua script run with EVALSHA, falling back to EVAL when Redis lost its script cache."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def __call__(
        self, connection: RedisConnection, keys: Sequence[Any], args: Sequence[Any]
    ) -> Deferred[Any]:
        d = connection.execute("EVALSHA", self.sha, len(keys), *keys, *args)

        def no_script(failure: Failure) -> Any:
            if failure.check(RedisError) and str(failure.value).startswith("NOSCRIPT"):
                return connection.execute("EVAL", self.source, len(keys), *keys, *args)
            return failure

        return d.addErrback(no_script)


APPEND_SCRIPT: Final = Script(APPEND)


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


class LogState:
    """What this node knows of one log: its last seq, recent items, listeners."""

    __slots__ = ("last", "listeners", "recent")

    def __init__(self, last: int, capacity: int) -> None:
        self.last = last
        self.recent = RecentItems(capacity)
        self.listeners: dict[Listener, None] = {}


EventHandler = Callable[[bytes], None]


@implementer(ILogStore)
class RedisLogStore(Directory):
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
    ) -> None:
        if retention < 1:
            raise ValueError("retention must be at least 1 item per log")
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.url = url
        self.host, self.port, self.db = parse_url(url)
        self.prefix = prefix
        self.retention = retention
        self.cache = min(max(1, cache), retention)
        self.clock_ms = clock_ms
        self.reactor = reactor
        self.epoch = ""
        self.events_channel = prefix + "events"
        self._logs: dict[str, LogState] = {}
        self.load_directory()
        self._unsaved: dict[tuple[str, str], None] = {}  # (set key, name) to write again
        self._handlers: dict[int, EventHandler] = {
            ord("i"): self._heard_item,
            ord("c"): lambda data: self._channels.add(data.decode()),
            ord("u"): lambda data: self._users.add(data.decode()),
        }
        self.resync_hooks: list[Callable[[], Deferred[Any]]] = []
        self.patterns: dict[bytes, Callable[[bytes, bytes], None]] = {}  # PSUBSCRIBE
        self.redis = RedisConnection(
            reactor, self.host, self.port, self.db, "commands", reply_timeout
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
        self._ready: Deferred[None] | None = None
        self._ready_waiters: list[Deferred[RedisLogStore]] = []
        self.is_ready = False
        self.closed = False
        self.resyncs = 0  # completed resyncs (tests wait on it)

    # Starting, and coming back after Redis was away

    def start(self) -> Deferred[RedisLogStore]:
        """Connect; fires once this node has loaded the store's state (retries until then)."""
        d: Deferred[RedisLogStore] = Deferred()
        if self.is_ready:
            d.callback(self)
            return d
        self._ready_waiters.append(d)
        self.redis.start()
        self.subscriber.start()
        return d

    def _subscribed(self, protocol: RespProtocol) -> Deferred[Any]:
        """A new subscriber connection: subscribe, then reload what may have been missed."""
        protocol.push = self._pushed
        channels = [self.events_channel]
        d = protocol.execute("SUBSCRIBE", *channels)
        for pattern in self.patterns:
            protocol.execute("PSUBSCRIBE", pattern).addErrback(lambda _: None)
        d.addCallback(lambda _: self._resync_soon(0.0))
        return d

    def _resync_soon(self, delay: float) -> None:
        self.reactor.callLater(delay, self._resync)

    def _resync(self) -> None:
        if self.closed or (not self.subscriber.connected and self.is_ready):
            return
        d = self.resync()

        def failed(reason: Failure) -> None:
            if not reason.check(RedisUnavailable):
                log.failure("Redis store: resync failed", reason)
            self._resync_soon(0.2)  # the command connection may come up a moment later

        d.addErrback(failed)

    def resync(self) -> Deferred[None]:
        """Reload the epoch, every log's seq, the channels and users; then run the hooks."""
        p = self.prefix
        fresh = uuid.uuid4().hex
        self.redis.send("SET", p + "epoch", fresh, "NX")
        replies = gatherResults(
            [
                self.redis.execute("GET", p + "epoch"),
                self.redis.execute("HGETALL", p + "seq"),
                self.redis.execute("SMEMBERS", p + "channels"),
                self.redis.execute("SMEMBERS", p + "users"),
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
                log.warn("Redis store: the store was emptied (new epoch); forgetting its logs")
                for state in self._logs.values():
                    state.last = 0
                    state.recent = RecentItems(self.cache)
                self._channels.clear()
                self._users.clear()
            self.epoch = epoch
            self._channels.update(name.decode() for name in channels)
            self._users.update(name.decode() for name in users)
            moved = []
            for i in range(0, len(pairs), 2):
                key, last = pairs[i].decode(), int(pairs[i + 1])
                known = self._logs.get(key)
                if known is None:
                    self._logs[key] = LogState(last, self.cache)
                elif last > known.last:
                    known.last = last
                    moved.append(known)
            for (set_key, name), _ in list(self._unsaved.items()):
                self._save(set_key, name)
            for hook in self.resync_hooks:
                await hook()
            self.resyncs += 1
            self.is_ready = True
            for state in moved:
                self._wake(state)
            waiters, self._ready_waiters = self._ready_waiters, []
            for waiter in waiters:
                waiter.callback(self)

        return Deferred.fromCoroutine(run())

    # Events from other nodes (and our own)

    def _pushed(self, message: Any) -> None:
        if not isinstance(message, list) or not message:
            return
        kind = message[0]
        if kind == b"message" and len(message) == 3:
            data = message[2]
            if data:
                handler = self._handlers.get(data[0])
                if handler is not None:
                    try:
                        handler(data[1:])
                    except Exception:
                        log.failure("Redis store: bad event {data!r}", data=data[:200])
        elif kind == b"pmessage" and len(message) == 4:
            callback = self.patterns.get(message[1])
            if callback is not None:
                try:
                    callback(message[2], message[3])
                except Exception:
                    log.failure(
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

    def _heard_item(self, data: bytes) -> None:
        key, seq, ts, payload = data.split(b"\n", 3)
        self._learn(key.decode(), LogItem(int(seq), int(ts), payload))

    def _learn(self, key: str, item: LogItem) -> LogItem:
        """Take in an item of ``key``; the LogItem this node holds for that seq."""
        state = self._logs.get(key)
        if state is None:
            state = self._logs[key] = LogState(0, self.cache)
        if item.seq <= state.last:
            recent = state.recent
            oldest = recent.oldest
            if oldest is not None and oldest <= item.seq:
                held = recent.between(item.seq, item.seq)
                if held and held[0].seq == item.seq:
                    return held[0]
            return item
        recent = state.recent
        contiguous = item.seq == state.last + 1 and self._ring_ends_at(state, state.last)
        if recent.items and not contiguous:
            state.recent = RecentItems(self.cache)  # a hole in what we heard: start afresh
        state.recent.add(item)
        state.last = item.seq
        self._wake(state)
        return item

    @staticmethod
    def _ring_ends_at(state: LogState, seq: int) -> bool:
        recent = state.recent
        oldest = recent.oldest
        return oldest is not None and oldest + len(recent.items) - 1 == seq

    @staticmethod
    def _wake(state: LogState) -> None:
        for listener in list(state.listeners):
            listener()

    # Appending

    def append(self, log: str, fields: Mapping[str, Any]) -> Deferred[LogItem]:
        if self.closed:
            return fail(RedisUnavailable("the Redis store is closed"))
        item = dict(fields)
        item.pop("seq", None)
        item.pop("ts", None)
        body = encode_json(item)
        p = self.prefix
        d = APPEND_SCRIPT(
            self.redis,
            (p + "seq", p + "ts", p + "log:" + log),
            (log, body, self.clock_ms(), self.retention, self.events_channel),
        )

        def appended(reply: list[Any]) -> LogItem:
            seq, ts, payload = reply
            return self._learn(log, LogItem(int(seq), int(ts), payload))

        return d.addCallback(appended)

    # Reading

    def last_seq(self, log: str) -> int:
        state = self._logs.get(log)
        return state.last if state else 0

    def first_seq(self, log: str) -> int:
        state = self._logs.get(log)
        return self._first(state) if state else 1

    def _first(self, state: LogState) -> int:
        return max(1, state.last - self.retention + 1)

    def cached(self, log: str, after: int, limit: int) -> Sequence[LogItem] | None:
        state = self._logs.get(log)
        if state is None:
            return []
        low = max(after + 1, self._first(state))
        high = min(state.last, low + limit - 1)
        if high < low:
            return []
        return self._held(state, low, high)

    def _held(self, state: LogState, low: int, high: int) -> Sequence[LogItem] | None:
        recent = state.recent
        oldest = recent.oldest
        if oldest is None or low < oldest or high > oldest + len(recent.items) - 1:
            return None
        return recent.between(low, high)

    def read(self, log: str, after: int, limit: int) -> Deferred[Sequence[LogItem]]:
        items = self.cached(log, after, limit)
        if items is not None:
            return succeed(items)
        state = self._logs[log]
        low = max(after + 1, self._first(state))
        return self._range(log, low, min(state.last, low + limit - 1))

    def history(
        self, log: str, before: int | None, after: int | None, limit: int
    ) -> Deferred[Sequence[LogItem]]:
        state = self._logs.get(log)
        if state is None:
            return succeed([])
        bounds = history_bounds(self._first(state), state.last, before, after, limit)
        if bounds is None:
            return succeed([])
        low, high = bounds
        held = self._held(state, low, high)
        if held is not None:
            return succeed(held)
        return self._range(log, low, high)

    def _range(self, log: str, low: int, high: int) -> Deferred[Sequence[LogItem]]:
        if self.closed:
            return fail(RedisUnavailable("the Redis store is closed"))
        d = self.redis.execute("XRANGE", self.prefix + "log:" + log, f"{low}-0", f"{high}-0")

        def parsed(entries: list[Any]) -> Sequence[LogItem]:
            first = self.first_seq(log)
            items = []
            for entry_id, fields in entries:
                seq = int(entry_id.split(b"-", 1)[0])
                if seq < first:
                    continue  # kept by approximate trimming, but beyond retention
                values = dict(zip(fields[::2], fields[1::2], strict=True))
                items.append(LogItem(seq, int(values[b"t"]), values[b"p"]))
            return items

        return d.addCallback(parsed)

    # Listeners

    def listen(self, log: str, listener: Listener) -> None:
        state = self._logs.get(log)
        if state is None:
            state = self._logs[log] = LogState(0, self.cache)
        state.listeners[listener] = None

    def unlisten(self, log: str, listener: Listener) -> None:
        state = self._logs.get(log)
        if state is not None:
            state.listeners.pop(listener, None)

    # Directory

    def persist_name(self, table: Table, name: str) -> None:
        """A new channel or username: into its Redis set, and announced to every node."""
        self._save(table, name)

    def _save(self, set_key: str, name: str) -> None:
        kind = "c" if set_key == "channels" else "u"
        self._unsaved[(set_key, name)] = None
        added = gatherResults(
            [
                self.redis.execute("SADD", self.prefix + set_key, name),
                self.publish_event(kind, name),
            ],
            consumeErrors=True,
        )

        def saved(_: object) -> None:
            self._unsaved.pop((set_key, name), None)

        added.addCallbacks(saved, lambda _: None)

    def find_user(self, username: str) -> Deferred[bool]:
        """Whether ``username`` ever logged in, asking Redis when this node has not heard so
        yet (it may have logged in on another node a moment ago)."""
        if username in self._users:
            return succeed(True)

        def found(member: int) -> bool:
            if member:
                self._users.add(username)
            return bool(member)

        d = self.redis.execute("SISMEMBER", self.prefix + "users", username)
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
