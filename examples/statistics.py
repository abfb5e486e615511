"""A statistics subscription that changes its ids and period, then cancels.

python examples/statistics.py ws://127.0.0.1:8080/ws
"""

from __future__ import annotations

import os
import resource
import sys
from typing import Any

from twisted.internet.defer import ensureDeferred
from twisted.internet.task import react

from chat.client import connect


async def main(reactor: Any, url: str) -> None:
    client = await connect(url)
    await client.login(f"stats-example-{os.getpid()}")

    # Report our own memory use (fire-and-forget: the server answers nothing).
    client.send_statistics(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)

    stats = client.statistics(["users"], period=0.5)
    print("users only:", await stats.next())  # the first update comes at once

    stats.set_ids(["users", "channels", "messages", "memory"])  # takes effect at once
    update = await stats.next()
    while "channel_count" not in update:  # an update sent before the change may be in flight
        update = await stats.next()
    print("more ids:  ", update)

    stats.set_period(0.2)  # faster
    for _ in range(2):
        print("every 0.2s:", await stats.next())

    stats.cancel()  # the server sends nothing more on it
    print("cancelled; ended:", stats.ended)
    await client.logout()
    await client.close()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} ws://HOST:PORT/ws")
    react(lambda reactor: ensureDeferred(main(reactor, sys.argv[1])).addTimeout(30, reactor))
