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
from chat.connection import Hub
from chat.server import make_hub
from chat.settings import Settings
from chat.web.site import make_site
from tests.helpers import until, within


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
    hub: Hub
    port: Any
    url: str

    @property
    def service(self) -> Any:
        return self.hub.service


async def start_server(settings: Settings | None = None) -> RunningServer:
    hub = make_hub(settings or Settings(store="memory"), reactor)
    port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(make_site(hub))
    return RunningServer(hub, port, f"ws://127.0.0.1:{port.getHost().port}/ws")


async def stop_server(server: RunningServer) -> None:
    for connection in list(server.hub.connections):
        connection.close(1000, "test over")
    await within(server.port.stopListening())
    await until(lambda: not server.hub.connections, what="connections to close")


@pytest_twisted.async_yield_fixture
async def server() -> AsyncIterator[RunningServer]:
    running = await start_server()
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
