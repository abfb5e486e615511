"""Build the server as a Twisted service: what ``twistd -n chat`` runs.

:func:`make_service` listens on every ``--listen`` endpoint first, then opens the backend
(store and presence, from :func:`chat.stores.backend.open_backend`), and returns a
:class:`ChatServerService` serving one site over one :class:`~chat.connection.Node`. The
server starts and stops what it is given and never asks which backend it is.

Why listen before anything else, in ``makeService`` rather than in twistd's
``privilegedStartService``: twistd calls ``makeService`` before it writes ``twistd.pid``,
daemonizes or starts logging, so an endpoint that cannot be listened on (a port in use, a port
below 1024 without the right, an address the machine does not have) ends ``twistd`` there with
one line on the terminal and exit status 1, having created nothing: no pid file and no
``chat.db`` (the store is opened only after every endpoint listens). Listening in
``privilegedStartService`` would come after the pid file, and a failure there is an
"Unhandled Error" that leaves twistd running, listening nowhere. Binding this early is as
privileged as twistd's own way (both run before ``--uid`` sheds privileges); relative paths
(``unix:chat.sock``, ``sqlite:chat.db``) are relative to the directory twistd was started in.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Sequence
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
)
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from chat.connection import Node
from chat.protocol.closes import SHUTDOWN
from chat.service.chat import ChatService
from chat.service.routes import router
from chat.settings import Settings
from chat.stores.backend import Backend, open_backend
from chat.web.endpoints import endpoint_type, server_endpoint
from chat.web.origins import origin_policy_warnings
from chat.web.site import make_site

CLOSE_GRACE = 2.0  # seconds connections get to finish the close handshake on shutdown

log = Logger(namespace="chat.server")


class ListenError(Exception):
    """An endpoint cannot be listened on; the message names it and says why, in one line."""


def make_node(settings: Settings, reactor: IReactorTime) -> tuple[Node, Backend]:
    """The node (service, router, connections) over the backend ``settings`` describe."""
    holder: list[ChatService] = []
    backend = open_backend(settings, reactor, lambda: holder[0].local_state())
    service = ChatService(backend.store, backend.presence, settings, reactor)
    holder.append(service)
    return Node(service, router, settings, reactor), backend


class SiteGate(Factory):
    """The factory the endpoints listen with: it hands every connection to the site once set.

    Why: the endpoints listen before the store is opened (see the module docstring), and the
    site needs the node, which needs the store. The reactor does not run before
    :meth:`ChatServerService.startService` sets the site, so no connection reaches the gate
    before; one that did would be closed at once. Start and stop (one per listening port) are
    passed on to the site, so it starts and stops as if it listened itself.
    """

    noisy = False  # the start-up lines say what listens where

    def __init__(self) -> None:
        self.site: IProtocolFactory | None = None

    def logPrefix(self) -> str:
        return "chat"

    def open(self, site: IProtocolFactory) -> None:
        self.site = site
        for _ in range(self.numPorts):
            site.doStart()

    def doStart(self) -> None:
        super().doStart()
        if self.site is not None:
            self.site.doStart()

    def doStop(self) -> None:
        listening = self.numPorts > 0
        super().doStop()
        if listening and self.site is not None:
            self.site.doStop()

    def buildProtocol(self, addr: IAddress | None) -> IProtocol | None:  # type: ignore[override]
        if self.site is None or addr is None:
            return None
        protocol: IProtocol | None = self.site.buildProtocol(addr)
        return protocol


@attrs.define
class Listener:
    """One ``--listen`` endpoint and its port (``pending`` while an endpoint still listens)."""

    description: str
    port: IListeningPort | None = None
    pending: Deferred[IListeningPort] | None = None


_REASONS = {
    errno.EADDRINUSE: "the address is already in use (another server listens there: stop it "
    "or choose another port)",
    errno.EACCES: "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)",
    errno.EADDRNOTAVAIL: "this machine has no such address",
}
_UNIX_REASONS = {
    errno.EADDRINUSE: "the socket file already exists (remove it if no server uses it)",
    errno.EACCES: "permission denied",
}


def listen_error(description: str, error: BaseException) -> ListenError:
    """A :class:`ListenError` saying, in one line, why ``description`` cannot be listened on."""
    if isinstance(error, CannotListenError):
        reason = error.socketError
        unix = endpoint_type(description) == "unix"
        code = getattr(reason, "errno", None)
        known = (_UNIX_REASONS if unix else _REASONS).get(code) if code is not None else None
        why = known or getattr(reason, "strerror", None) or str(reason)
        if unix:
            where = os.fsdecode(error.port)
        else:
            where = f"{error.interface or 'all addresses'} port {error.port}"
        return ListenError(f"--listen {description}: cannot listen on {where}: {why}")
    return ListenError(f"--listen {description}: cannot listen: {error}")


def listen_all(reactor: Any, settings: Settings, factory: Factory) -> list[Listener]:
    """Listen with ``factory`` on every ``--listen`` endpoint, now, before the reactor runs.

    TCP, TLS and UNIX endpoints listen at once; a failure raises :class:`ListenError` (after
    releasing those that listened). An endpoint type that listens only later (a plugin's) is
    returned ``pending``: :meth:`ChatServerService.startService` waits for it.
    """
    listeners: list[Listener] = []
    for description in settings.listen:
        endpoint = server_endpoint(reactor, description, settings.listen_backlog)
        d = endpoint.listen(factory)
        outcome = _outcome(d)
        if not outcome:
            listeners.append(Listener(description, pending=d))
            continue
        (result,) = outcome
        if isinstance(result, Failure):
            release(listeners)
            raise listen_error(description, result.value or Exception(result))
        listeners.append(Listener(description, port=result))
    return listeners


def _outcome(d: Deferred[IListeningPort]) -> list[IListeningPort | Failure]:
    """What ``d`` has already fired with, as a list of one (handled: the caller raises or
    keeps it), or ``[]`` while it has not fired (the caller then waits on ``d``)."""
    outcome: list[IListeningPort | Failure] = []

    def keep(result: IListeningPort | Failure) -> IListeningPort | Failure:
        outcome.append(result)
        return result

    d.addBoth(keep)
    if outcome:
        d.addErrback(lambda _: None)
    return outcome


def release(listeners: Sequence[Listener]) -> None:
    """Let go of ports that listened when twistd will not run after all (a later error).

    The process is about to exit, which closes the sockets; only a UNIX socket's file and its
    lock file would outlive it (the reactor, which would remove them, never runs), and a socket
    file left behind makes the next start fail, so both are removed here.
    """
    for listener in listeners:
        port = listener.port
        if port is None:
            continue
        host = port.getHost()
        port.stopListening()
        if isinstance(host, UNIXAddress) and host.name and not host.name.startswith(b"\0"):
            with contextlib.suppress(OSError):
                os.unlink(host.name)
            lock = getattr(port, "lockFile", None)  # twisted.internet.unix.Port's
            if lock is not None and lock.locked:
                lock.unlock()


def listener_line(description: str, address: IAddress) -> str:
    """Where ``description`` serves the page and the WebSocket, as URLs one can open.

    The address is the port's real one: ``tcp:0`` shows the port it got. An endpoint on all
    addresses is shown as ``localhost`` (the URL that works on the machine itself).
    """
    secure = endpoint_type(description) == "ssl"
    http, ws = ("https", "wss") if secure else ("http", "ws")
    if isinstance(address, IPv4Address | IPv6Address):
        wildcard = address.host in ("0.0.0.0", "::", "")
        host = "localhost" if wildcard else address.host
        if ":" in host:
            host = f"[{host}]"
        authority = f"{host}:{address.port}"
        where = f"{description} (all addresses)" if wildcard else description
        return f"listening on {where}: page {http}://{authority}/, WebSocket {ws}://{authority}/ws"
    if isinstance(address, UNIXAddress):
        path = os.fsdecode(address.name or b"")
        return (
            f"listening on {description}: page {http}://localhost/, WebSocket "
            f"{ws}://localhost/ws, through the socket {path}"
        )
    return f"listening on {description} ({address})"


def _seconds(value: float, off: str = "off") -> str:
    return f"{value:g} s" if value > 0 else off


def summary_line(settings: Settings, backend: Backend) -> str:
    """The store, the auth mode and the session settings, in one line."""
    auth = {
        "open": "auth open (usernames are claims)",
        "token": "auth token (login needs a token signed with the --secret-file)",
    }.get(settings.auth, f"auth {settings.auth}")
    linger = _seconds(settings.session_linger, "off (a session ends with its connection)")
    dedup = _seconds(settings.dedup_window)
    return (
        f"store {backend.description}; {auth}; session linger {linger}; "
        f"client_id dedup window {dedup}"
    )


class ChatServerService(Service):
    """The whole server: the node, its backend and the ports it listens on."""

    def __init__(
        self,
        settings: Settings,
        node: Node,
        backend: Backend,
        listeners: list[Listener],
        gate: SiteGate,
        site: IProtocolFactory,
    ) -> None:
        self.settings = settings
        self.node = node
        self.backend = backend
        self.listeners = listeners
        self.gate = gate
        self.site = site

    def startService(self) -> None:
        """Say where it serves and with what, hand connections to the site, start the backend.

        The site serves at once, also while the backend is not ready (Redis unreachable):
        ``/healthz`` then says what is wrong, and logins wait until the backend can serve
        (the login timeout bounds the wait).
        """
        super().startService()
        for listener in self.listeners:
            if listener.port is not None:
                self._log_listener(listener.description, listener.port)
            elif listener.pending is not None:
                self._wait_for(listener)
        log.info("{summary}", summary=summary_line(self.settings, self.backend))
        for warning in origin_policy_warnings(self.settings):
            log.warn("{warning}", warning=warning)
        self.gate.open(self.site)

        def failed(reason: Failure) -> None:
            log.error(
                "the store {store} could not start: {error}; stopping",
                store=self.settings.store,
                error=reason.getErrorMessage(),
            )
            self._stop_reactor()

        started = self.backend.start(self.node.service.announce)
        self.node.service.serve_when(started)  # logins wait until it can serve
        started.addErrback(failed)

    def _log_listener(self, description: str, port: IListeningPort) -> None:
        line = listener_line(description, port.getHost())
        log.info("{listener}", listener=line, endpoint=description)

    def _wait_for(self, listener: Listener) -> None:
        """An endpoint that listens only once the reactor runs: failing, it stops the server.

        (Its exit status is then 0: twistd offers a service no way to set one.)
        """
        assert listener.pending is not None

        def listening(port: IListeningPort) -> None:
            listener.port = port
            self._log_listener(listener.description, port)

        def failed(reason: Failure) -> None:
            log.error(
                "{error}; stopping",
                error=listen_error(listener.description, reason.value or Exception(reason)),
            )
            self._stop_reactor()

        listener.pending.addCallbacks(listening, failed)

    def _stop_reactor(self) -> None:
        reactor: Any = self.node.clock
        if getattr(reactor, "running", False):
            reactor.stop()

    def stopService(self) -> Deferred[None]:
        """Stop listening, close every connection with 1001, end the sessions, close the store.

        Connections get up to :data:`CLOSE_GRACE` seconds for the close handshake; any still
        open then are dropped here, every session ends (its ``leave`` items are queued before
        the store closes), and the store commits everything queued before its ``close()``
        fires: SIGTERM loses nothing that was acknowledged or queued.
        """
        super().stopService()
        node = self.node
        ports = [listener.port for listener in self.listeners if listener.port is not None]
        stopped = gatherResults(
            [maybeDeferred(port.stopListening) for port in ports], consumeErrors=True
        )
        stopped.addBoth(lambda _: node.close_all(SHUTDOWN, CLOSE_GRACE))

        def end_sessions(_: object) -> Deferred[None]:
            for connection in list(node.connections):
                connection.connection_lost()
            node.service.end_all()
            node.throttle.flush()  # say how many client-caused lines were held back
            d: Deferred[None] = maybeDeferred(self.backend.stop)
            return d.addBoth(lambda _: node.service.store.close())

        result: Deferred[None] = stopped.addBoth(end_sessions)
        return result


def make_service(settings: Settings, reactor: Any = None) -> ChatServerService:
    """Listen on every endpoint, then open the backend: a :class:`ChatServerService`.

    Raises :class:`ListenError` (nothing opened, nothing created) or the backend's
    :class:`~chat.stores.errors.StoreOpenError` (the ports released).
    """
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    gate = SiteGate()
    listeners = listen_all(reactor, settings, gate)
    try:
        node, backend = make_node(settings, reactor)
    except BaseException:
        release(listeners)
        raise
    site = make_site(node)
    site.noisy = False  # no "Starting factory <...>" lines: the start-up lines say it all
    wrapped = getattr(site, "wrappedFactory", None)
    if wrapped is not None:
        wrapped.noisy = False
    return ChatServerService(settings, node, backend, listeners, gate, site)
