"""The Redis connection: RESP over Twisted, parsed by ``hiredis``, with our failure semantics.

Replies are parsed by :class:`hiredis.Reader` (the C parser redis-py and txredisapi use): it is
incremental, so a large reply arriving in many TCP chunks is parsed once, not re-scanned on every
chunk. Commands are encoded by :func:`hiredis.pack_command`.

Why a connection class of our own around it rather than a client library (docs/cluster.md):
``txredisapi`` imports the reactor at module level and queues or retries commands while
disconnected, and redis-py needs the asyncio reactor; the store needs exactly these semantics:

- pipelined commands on one connection, answered in order; one subscriber connection whose
  pushed messages go to a callback;
- while a connection is down every command **fails at once** with :class:`StoreUnavailable`
  (the client's request gets ``internal``, saying to retry shortly);
- a command not answered within ``reply_timeout`` fails and drops the connection, so a stalled
  Redis never hangs a client's request — but a reply that is merely large is not stalled: the
  watchdog measures time without *progress* (bytes arriving), not time since the command;
- the connection comes back by itself (backoff from 0.1 s to at most 1 s) and ``on_connect``
  runs before it is used again; the outage is logged once when it starts and once when it ends.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import hiredis
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from chat.stores.errors import StoreError, StoreUnavailable

logger = Logger()

Reply = Any  # bytes | int | None | list[Reply] | RedisError


class RedisError(StoreError):
    """Redis answered a command with an error reply (``-ERR ...``)."""


class RespProtocol(Protocol):
    """One connection: commands answered in order, or (subscriber) pushed messages."""

    def __init__(self, owner: RedisConnection) -> None:
        self.owner = owner
        self.reader = hiredis.Reader(replyError=RedisError)
        self.pending: deque[Deferred[Reply]] = deque()
        self.progress = 0.0  # when a command was last sent or a byte last arrived
        self.watchdog: IDelayedCall | None = None
        self.push: Callable[[Reply], None] | None = None  # set in subscriber mode
        self.lost = False

    def connectionMade(self) -> None:
        self.owner.made(self)

    def execute(self, *args: Any) -> Deferred[Reply]:
        if self.lost:  # e.g. from the errback of a command this connection failed
            return fail(StoreUnavailable(f"lost the connection to Redis at {self.owner.address}"))
        d: Deferred[Reply] = Deferred()
        if not self.pending:
            self.progress = self.owner.clock.seconds()
        self.pending.append(d)
        assert self.transport is not None
        self.transport.write(hiredis.pack_command(args))
        if self.watchdog is None:
            self.watchdog = self.owner.clock.callLater(self.owner.reply_timeout, self._check)
        return d

    def _check(self) -> None:
        self.watchdog = None
        if not self.pending or self.lost:
            return
        waited = self.owner.clock.seconds() - self.progress
        timeout = self.owner.reply_timeout
        if waited >= timeout:
            logger.warn(
                "Redis {name}: no reply for {timeout:g} s; reconnecting",
                name=self.owner.name,
                timeout=timeout,
            )
            self.transport.abortConnection()  # type: ignore[union-attr]
        else:
            self.watchdog = self.owner.clock.callLater(timeout - waited, self._check)

    def dataReceived(self, data: bytes) -> None:
        self.progress = self.owner.clock.seconds()
        reader = self.reader
        try:
            reader.feed(data)
            while True:
                reply = reader.gets()
                if reply is False:
                    break
                self._answer(reply)
        except hiredis.ProtocolError as exc:
            logger.error("Redis {name}: not a RESP reply ({error}); reconnecting",
                      name=self.owner.name, error=exc)  # fmt: skip
            if self.transport is not None:
                self.transport.abortConnection()  # type: ignore[attr-defined]

    def _answer(self, reply: Reply) -> None:
        if self.push is not None and not self.pending:
            self.push(reply)
            return
        if not self.pending:
            logger.error(
                "Redis {name}: unexpected reply {value!r}", name=self.owner.name, value=reply
            )
            return
        d = self.pending.popleft()
        if isinstance(reply, RedisError):
            d.errback(reply)
        else:
            d.callback(reply)

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        self.lost = True
        if self.watchdog is not None and self.watchdog.active():
            self.watchdog.cancel()
        self.watchdog = None
        pending, self.pending = self.pending, deque()
        # The owner first lets go of this connection: what the errbacks below send next must
        # fail at once, not wait forever on a connection that is gone.
        self.owner.lost(self)
        for d in pending:
            d.errback(StoreUnavailable(f"lost the connection to Redis at {self.owner.address}"))


class _Factory(ClientFactory):
    def __init__(self, owner: RedisConnection) -> None:
        self.owner = owner
        self.noisy = False  # no "Starting factory" line every reconnection attempt

    def buildProtocol(self, addr: Any) -> RespProtocol:
        return RespProtocol(self.owner)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.owner.failed(reason)


class RedisConnection:
    """One reconnecting connection to Redis.

    ``on_connect(protocol)`` runs on each new connection (SELECT, SUBSCRIBE, resync...) and
    may return a Deferred; commands are accepted only after it succeeded.
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
    ) -> None:
        self.clock = reactor
        self.reactor = reactor
        self.host = host
        self.port = port
        self.db = db
        self.name = name
        self.reply_timeout = reply_timeout
        self.on_connect = on_connect
        self.protocol: RespProtocol | None = None  # usable: connected and set up
        self.delay = 0.1
        self.stopped = False
        self.connecting = False
        self.retry: IDelayedCall | None = None
        self.down_since: float | None = None  # when the outage began (logged once)
        self.attempts = 0  # failed attempts in this outage

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
            return fail(StoreUnavailable(f"Redis at {self.address} is unreachable"))
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
            if self.down_since is not None:
                logger.info(
                    "Redis {name}: connected again to {address} after {seconds:.1f} s "
                    "({attempts} attempts)",
                    name=self.name,
                    address=self.address,
                    seconds=self.clock.seconds() - self.down_since,
                    attempts=self.attempts,
                )
            self.down_since = None
            self.attempts = 0

        def setup_failed(reason: Failure) -> None:
            logger.warn(
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
        self.protocol = None
        self.connecting = False
        self._again("connection lost")

    def failed(self, reason: Failure) -> None:
        self.connecting = False
        self._again(str(reason.value))

    def _again(self, why: str) -> None:
        if self.stopped:
            return
        self.attempts += 1
        if self.down_since is None:
            self.down_since = self.clock.seconds()
            logger.warn(
                "Redis {name}: {address} unreachable ({why}); retrying every second at most",
                name=self.name,
                address=self.address,
                why=why,
            )
        self.retry = self.reactor.callLater(self.delay, self.start)
        self.delay = min(self.delay * 2, 1.0)

    def stop(self) -> None:
        self.stopped = True
        if self.retry is not None and self.retry.active():
            self.retry.cancel()
        protocol, self.protocol = self.protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.loseConnection()
