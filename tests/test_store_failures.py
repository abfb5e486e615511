"""A store that fails: requests get ``internal``, the connection and the server go on."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import serverFromString

from chat.client import ChatError, connect
from chat.connection import Node
from chat.service.routes import router
from chat.settings import Settings
from chat.stores.errors import StoreWriteError
from chat.stores.interface import Appended
from chat.stores.memory import MemoryLogStore
from chat.web.site import make_site
from tests.helpers import chat_service, within

ensure = pytest_twisted.ensureDeferred


class BrokenDiskStore(MemoryLogStore):
    """Appends to channel ``broken`` fail, as a full disk would."""

    def append(
        self, log: str, fields: Mapping[str, Any], copy_to: str | None = None, dedup: Any = None
    ) -> Deferred[Appended]:
        if log == "#broken" and fields.get("kind") == "message":
            return fail(StoreWriteError("[Errno 28] No space left on device"))
        return super().append(log, fields, copy_to, dedup)


@ensure
async def test_failed_append_answers_internal_and_the_connection_stays_usable() -> None:
    node = Node(chat_service(BrokenDiskStore()), router, Settings(store="memory"), reactor)
    port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(make_site(node))
    client = await within(connect(f"ws://127.0.0.1:{port.getHost().port}/ws"))
    try:
        await within(client.login("alice"))
        await within(client.join("broken"))
        with pytest.raises(ChatError) as info:
            await within(client.send("broken", "lost?"))
        assert info.value.code == "internal"
        assert "Traceback" not in info.value.message
        await within(client.join("fine"))
        assert (await within(client.send("fine", "ok")))["seq"] == 2
    finally:
        await within(client.close())
        await within(port.stopListening())
