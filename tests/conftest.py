"""Fixtures: an in-process server on a real socket, and clients of the project's library."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString

from chat.client import ChatClient, connect
from chat.connection import Node
from chat.protocol.closes import CloseCode, Disconnect
from chat.server import make_node
from chat.settings import Settings
from chat.stores.backend import Backend
from chat.web.site import make_site
from tests.helpers import until, within

TEST_OVER = Disconnect(CloseCode.NORMAL, "test over")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Any:
    """In CI (CI=true) a skipped test counts as a failure."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") == "true" and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where skips count as failures: {report.longrepr}"


@attrs.define
class RunningServer:
    node: Node
    backend: Backend
    port: Any
    url: str

    @property
    def service(self) -> Any:
        return self.node.service


async def start_server(settings: Settings | None = None) -> RunningServer:
    """A whole server (node, backend, site) on a free port of 127.0.0.1."""
    node, backend = make_node(settings or Settings(store="memory"), reactor)
    await within(backend.start(node.service.announce))
    port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(make_site(node))
    return RunningServer(node, backend, port, f"ws://127.0.0.1:{port.getHost().port}/ws")


async def stop_server(server: RunningServer) -> None:
    for connection in list(server.node.connections):
        connection.close(TEST_OVER)
    await within(server.port.stopListening())
    await until(lambda: not server.node.connections, what="connections to close")
    server.service.end_all()
    await within(server.backend.stop())
    await within(server.service.store.close())


def pytest_configure(config: Any) -> None:
    config.addinivalue_line(
        "markers", "settings(**fields): Settings fields of the `server` fixture's server"
    )
    config.addinivalue_line(
        "markers", "docs_screenshot: retakes docs/screenshot.png (UPDATE_DOCS_SCREENSHOT=1)"
    )


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """The screenshot of the docs is retaken on request, not in every run (and is not a
    skipped test: in CI a skip counts as a failure)."""
    if os.environ.get("UPDATE_DOCS_SCREENSHOT"):
        return
    kept = [item for item in items if item.get_closest_marker("docs_screenshot") is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept


@pytest_twisted.async_yield_fixture
async def server(request: Any) -> AsyncIterator[RunningServer]:
    """A server on the memory store; ``@pytest.mark.settings(session_linger=0)`` changes it."""
    marker = request.node.get_closest_marker("settings")
    fields = {"store": "memory", **(marker.kwargs if marker else {})}
    running = await start_server(Settings(**fields))
    yield running
    await stop_server(running)


Connect = Callable[..., Awaitable[ChatClient]]


@pytest_twisted.async_yield_fixture
async def client_factory(server: RunningServer) -> AsyncIterator[Connect]:
    """``await client_factory("alice")``: a connected client, logged in when named."""
    opened: list[ChatClient] = []

    async def open_client(username: str | None = None, url: str | None = None) -> ChatClient:
        client = await within(connect(url or server.url))
        opened.append(client)
        if username is not None:
            await within(client.login(username))
        return client

    yield open_client
    for client in opened:
        await within(client.close())
