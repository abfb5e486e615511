"""``python -m bench.baselines --mode autobahn|floor|bare --port PORT`` (see bench.baselines)."""

from __future__ import annotations

import argparse

from twisted.internet import reactor

from bench.baselines.bare import BareFactory
from bench.baselines.codec import CODEC
from bench.baselines.protocol import Factory

BACKLOG = 1024  # the chat server's --listen-backlog default: the same queue for every server


def main() -> None:
    parser = argparse.ArgumentParser(description="a comparison server of the benchmarks")
    parser.add_argument("--mode", choices=["autobahn", "floor", "bare"], required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backlog", type=int, default=BACKLOG, help="listen backlog")
    args = parser.parse_args()
    url = f"ws://127.0.0.1:{args.port}"
    factory = BareFactory(url) if args.mode == "bare" else Factory(url, args.mode)
    reactor.listenTCP(args.port, factory, backlog=args.backlog, interface="127.0.0.1")
    print(
        f"baseline {args.mode} ({CODEC}) listening on 127.0.0.1:{args.port}, "
        f"backlog {args.backlog}",
        flush=True,
    )
    reactor.run()


if __name__ == "__main__":
    main()
