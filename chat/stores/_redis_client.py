"""A small Redis client on Twisted: RESP2, pipelining, pub/sub, reconnection, reply timeouts.

Why our own (about 250 lines) rather than a library; see docs/cluster.md:

- ``txredisapi`` imports the reactor at module level, is untyped, and queues or retries
  commands in ways that make "fail the request with ``internal`` at once while Redis is away"
  hard to guarantee; redis-py's client is blocking or asyncio (the server would have to run on
  the asyncio reactor).
- The store needs exactly: pipelined commands on one connection (``EVALSHA``, ``XRANGE``,
  ``HGETALL``...), one subscriber connection, and precise failure semantics: while a
  connection is down every command **fails at once** with :class:`RedisUnavailable`; a
  command not answered within ``reply_timeout`` fails and drops the connection (a stalled
  Redis never hangs a client's request); the connection comes back by itself (backoff from
  0.1 s to at most 1 s), and ``on_connect`` runs before it is used again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()

Reply = Any  # bytes | int | None | list[Reply] | RedisError


class RedisError(Exception):
    """Redis answered a command with an error reply (``-ERR ...``)."""


class RedisUnavailable(ConnectionError):
    """Redis cannot be reached now: not connected, connection lost, or no reply in time."""


class Incomplete(Exception):
    pass


def encode_command(args: tuple[Any, ...]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        else:
            data = str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def parse(buffer: bytes, pos: int) -> tuple[Reply, int]:
    """One reply from ``buffer[pos:]``: (value, position after it), or raise Incomplete."""
    end = buffer.find(b"\r\n", pos)
    if end < 0:
        raise Incomplete
    kind = buffer[pos : pos + 1]
    line = buffer[pos + 1 : end]
    pos = end + 2
    if kind == b"$":
        length = int(line)
        if length < 0:
            return None, pos
        if len(buffer) < pos + length + 2:
            raise Incomplete
        return buffer[pos : pos + length], pos + length + 2
    if kind == b":":
        return int(line), pos
    if kind == b"+":
        return line, pos
    if kind == b"-":
        return RedisError(line.decode(errors="replace")), pos
    if kind == b"*":
        count = int(line)
        if count < 0:
            return None, pos
        values = []
        for _ in range(count):
            value, pos = parse(buffer, pos)
            values.append(value)
        return values, pos
    raise ValueError(f"not a RESP reply: {buffer[pos - len(line) - 3 : pos + 20]!r}")


class RespProtocol(Protocol):
    """One connection: commands answered in order, or (subscriber) pushed messages."""

    def __init__(self, owner: RedisConnection) -> None:
        self.owner = owner
        self.buffer = b""
        self.pending: deque[tuple[Deferred[Reply], float]] = deque()
        self.watchdog: IDelayedCall | None = None
        self.push: Callable[[Reply], None] | None = None  # set in subscriber mode
        self.lost = False

    def connectionMade(self) -> None:
        self.owner.made(self)

    def execute(self, *args: Any) -> Deferred[Reply]:
        d: Deferred[Reply] = Deferred()
        self.pending.append((d, self.owner.clock.seconds()))
        assert self.transport is not None
        self.transport.write(encode_command(args))
        if self.watchdog is None:
            self.watchdog = self.owner.clock.callLater(self.owner.reply_timeout, self._check)
        return d

    def _check(self) -> None:
        self.watchdog = None
        if not self.pending or self.lost:
            return
        waited = self.owner.clock.seconds() - self.pending[0][1]
        timeout = self.owner.reply_timeout
        if waited >= timeout:
            log.warn("Redis {name}: no reply in {timeout:g} s; reconnecting", **self._names())
            self.transport.abortConnection()  # type: ignore[union-attr]
        else:
            self.watchdog = self.owner.clock.callLater(timeout - waited, self._check)

    def _names(self) -> dict[str, Any]:
        return {"name": self.owner.name, "timeout": self.owner.reply_timeout}

    def dataReceived(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        pos = 0
        size = len(buffer)
        while pos < size:
            try:
                value, pos_after = parse(buffer, pos)
            except Incomplete:
                break
            pos = pos_after
            if self.push is not None and not self.pending:
                self.push(value)
                continue
            if not self.pending:
                log.error(
                    "Redis {name}: unexpected reply {value!r}", name=self.owner.name, value=value
                )
                continue
            d, _ = self.pending.popleft()
            if isinstance(value, RedisError):
                d.errback(value)
            else:
                d.callback(value)
        self.buffer = buffer[pos:]

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        self.lost = True
        if self.watchdog is not None and self.watchdog.active():
            self.watchdog.cancel()
        self.watchdog = None
        pending, self.pending = self.pending, deque()
        for d, _ in pending:
            d.errback(RedisUnavailable(f"lost the connection to Redis at {self.owner.address}"))
        self.owner.lost(self)


class _Factory(ClientFactory):
    def __init__(self, owner: RedisConnection) -> None:
        self.owner = owner

    def buildProtocol(self, addr: Any) -> RespProtocol:
        return RespProtocol(self.owner)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.owner.failed(reason)


class RedisConnection:
    """One reconnecting connection to Redis.

    ``on_connect(protocol)`` runs on each new connection (SELECT, SUBSCRIBE, resync...) and
    may return a Deferred; commands are accepted only after it succeeded. ``on_lost()`` runs
    when an established connection is lost.
    """

    def __init__(
        self,
        reactor: Any,
        host: str,
        port: int,
        db: int = 0,
        name: str = "commands",
        reply_timeout: float = 3.0,
        on_connect: Callable[[RespProtocol], Deferred[Any] | None] | None = None,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        self.clock = reactor
        self.reactor = reactor
        self.host = host
        self.port = port
        self.db = db
        self.name = name
        self.reply_timeout = reply_timeout
        self.on_connect = on_connect
        self.on_lost = on_lost
        self.protocol: RespProtocol | None = None  # usable: connected and set up
        self.delay = 0.1
        self.stopped = False
        self.connecting = False
        self.retry: IDelayedCall | None = None
        self.down_logged = False

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        return self.protocol is not None

    def start(self) -> None:
        if self.stopped or self.connecting or self.protocol is not None:
            return
        self.connecting = True
        self.reactor.connectTCP(self.host, self.port, _Factory(self), timeout=2)

    def execute(self, *args: Any) -> Deferred[Reply]:
        if self.protocol is None:
            return fail(RedisUnavailable(f"Redis at {self.address} is unreachable"))
        return self.protocol.execute(*args)

    def send(self, *args: Any) -> None:
        """Run a command whose answer nobody waits for (failures are ignored)."""
        self.execute(*args).addErrback(lambda _: None)

    def made(self, protocol: RespProtocol) -> None:
        def ready(_: object) -> None:
            if protocol.lost:
                return
            self.connecting = False
            self.protocol = protocol
            self.delay = 0.1
            if self.down_logged:
                log.info(
                    "Redis {name}: connected again to {address}",
                    name=self.name,
                    address=self.address,
                )
            self.down_logged = False

        def setup_failed(reason: Failure) -> None:
            log.warn(
                "Redis {name}: setting up the connection failed: {error}",
                name=self.name,
                error=reason.value,
            )
            if protocol.transport is not None:
                protocol.transport.abortConnection()  # type: ignore[attr-defined]

        def setup() -> Any:
            if self.db:
                protocol.execute("SELECT", self.db)
            if self.on_connect is not None:
                return self.on_connect(protocol)
            return None

        d: Deferred[Any] = Deferred()
        d.addCallback(lambda _: setup())
        d.addCallbacks(ready, setup_failed)
        d.callback(None)

    def lost(self, protocol: RespProtocol) -> None:
        was_usable = self.protocol is protocol
        self.protocol = None
        self.connecting = False
        if was_usable and self.on_lost is not None:
            self.on_lost()
        self._again("connection lost")

    def failed(self, reason: Failure) -> None:
        self.connecting = False
        self._again(str(reason.value))

    def _again(self, why: str) -> None:
        if self.stopped:
            return
        if not self.down_logged:
            log.warn(
                "Redis {name}: {address} unreachable ({why}); retrying",
                name=self.name,
                address=self.address,
                why=why,
            )
            self.down_logged = True
        self.retry = self.reactor.callLater(self.delay, self.start)
        self.delay = min(self.delay * 2, 1.0)

    def stop(self) -> None:
        self.stopped = True
        if self.retry is not None and self.retry.active():
            self.retry.cancel()
        protocol, self.protocol = self.protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.loseConnection()
