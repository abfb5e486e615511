"""Two users talk in a channel, then privately, with the client library.

python examples/conversation.py ws://127.0.0.1:8080/ws
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import ensureDeferred
from twisted.internet.task import react

from chat.client import Stream, connect


async def wait_for(feed: Stream, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The next item of ``feed`` that ``wanted`` accepts (other items are skipped)."""
    while True:
        item: dict[str, Any] = await feed.next()
        if wanted(item):
            return item


async def main(reactor: Any, url: str) -> None:
    suffix = os.getpid()
    alice_name, bob_name, channel = f"alice-{suffix}", f"bob-{suffix}", f"lobby-{suffix}"

    alice = await connect(url)
    await alice.login(alice_name)
    bob = await connect(url)
    await bob.login(bob_name)

    # Open the live feeds first: then nothing sent after the joins can be missed.
    alice_feed, bob_feed = alice.messages(), bob.messages()
    await alice.join(channel)
    await bob.join(channel)

    # In the channel: every member gets the message, the sender included.
    await alice.send(channel, f"hello {bob_name}!")
    said = await wait_for(bob_feed, lambda item: item["kind"] == "message")
    print(f"{bob_name} read in #{channel}: <{said['from']}> {said['content']}")

    # Privately: only the recipient's inbox gets it (its channel is null).
    await bob.send(user=alice_name, content="hi, just between us")
    private = await wait_for(alice_feed, lambda item: item["channel"] is None)
    print(f"{alice_name} got a private message from {private['from']}: {private['content']}")

    print("members:", await alice.users(channel))
    history = await bob.history(channel)
    print("history:", [f"{item['kind']}:{item['from']}" for item in history])

    await alice.close()
    await bob.close()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} ws://HOST:PORT/ws")
    react(lambda reactor: ensureDeferred(main(reactor, sys.argv[1])).addTimeout(30, reactor))
