"""A Twisted client library for the chat server, pleasant to script with.

::

    from twisted.internet.defer import ensureDeferred
    from twisted.internet.task import react
    from chat.client import connect

    async def main(reactor):
        client = await connect("ws://127.0.0.1:8080/ws")
        await client.login("alice")
        feed = client.messages()
        await client.join("general")
        await client.send("general", "hello")
        async for item in feed:
            print(item)

    react(lambda reactor: ensureDeferred(main(reactor)))

Every request method returns a Deferred (awaitable in ``async def`` code) that fails with
:class:`ChatError` carrying the server's error code. Streams are :class:`Stream` objects that
can be iterated with ``async for``, paused (credit stops being granted), resumed and cancelled.
:class:`ReconnectingClient` keeps one session across dropped connections (resume, catch up,
send again what was not acknowledged). The guide: docs/client.md.
"""

from chat.client.api import (
    ChatClient,
    ChatError,
    ConnectionLost,
    SendInterrupted,
    StatisticsHandle,
    Stream,
    connect,
    new_client_id,
)
from chat.client.reconnecting import Connected, Observer, ReconnectingClient

__all__ = [
    "ChatClient",
    "ChatError",
    "Connected",
    "ConnectionLost",
    "Observer",
    "ReconnectingClient",
    "SendInterrupted",
    "StatisticsHandle",
    "Stream",
    "connect",
    "new_client_id",
]
