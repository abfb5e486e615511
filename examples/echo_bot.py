"""A bot that answers in a channel: it repeats what others say, then exits after N answers.

python examples/echo_bot.py ws://127.0.0.1:8080/ws --channel echo --count 3
"""

from __future__ import annotations

import argparse
from typing import Any

from twisted.internet.defer import ensureDeferred
from twisted.internet.task import react

from chat.client import connect


async def main(reactor: Any, options: argparse.Namespace) -> None:
    client = await connect(options.url)
    await client.login(options.name)
    feed = client.messages()  # opened before joining, so nothing said after the join is missed
    await client.join(options.channel)
    print(f"{options.name} listening in #{options.channel}", flush=True)

    answered = 0
    async for item in feed:
        if item["kind"] != "message" or item["channel"] != options.channel:
            continue
        if item["from"] == options.name:
            continue  # our own answers come back too: never answer ourselves
        await client.send(options.channel, f"{item['from']} said: {item['content']}")
        answered += 1
        print(f"answered {item['from']} ({answered}/{options.count})", flush=True)
        if answered >= options.count:
            break
    await client.logout()  # the name is free at once: the bot can be started again right away
    await client.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="ws://HOST:PORT/ws")
    parser.add_argument("--channel", default="echo")
    parser.add_argument("--name", default="echo-bot")
    parser.add_argument("--count", type=int, default=1, help="answers before exiting")
    options = parser.parse_args()
    react(lambda reactor: ensureDeferred(main(reactor, options)))
