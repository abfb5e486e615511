"""A message sent again with the same ``client_id`` is stored once — across a ``kill -9`` of a
durable server and across the nodes of a cluster (PROTOCOL.md 1.1, Idempotent messages).

As users run it: ``twistd -n chat`` subprocesses, a client the project did not write.
"""

from __future__ import annotations

import os
import signal
import tempfile
import uuid

from tests.helpers import free_port, twistd_server
from tests.peer import Peer, data
from tests.redis_fixtures import shared_redis_url


def test_a_retry_after_kill_9_of_the_sqlite_server_is_a_duplicate() -> None:
    with tempfile.TemporaryDirectory() as directory:
        store = f"sqlite:{directory}/chat.db"
        port = free_port()
        with twistd_server("--store", store, port=port) as (proc, _):
            peer = Peer(f"ws://127.0.0.1:{port}/ws")
            data(peer.request("login", {"username": "alice"}))
            data(peer.request("channel.join", {"channel": "room"}))
            frame = {"channel": "room", "content": "exactly once", "client_id": "k9:1"}
            first = data(peer.request("message", frame))
            os.killpg(proc.pid, signal.SIGKILL)  # right after the acknowledgement
            proc.wait(10)
            peer.close()
        with twistd_server("--store", store, port=port):
            again = Peer(f"ws://127.0.0.1:{port}/ws")
            assert data(again.request("login", {"username": "alice"}))["resumed"] is False
            data(again.request("channel.join", {"channel": "room"}))
            retry = data(again.request("message", frame))
            assert retry == {**first, "duplicate": True}
            history = again.collect(9, "history", {"channel": "room"})
            assert [i.get("content") for i in history].count("exactly once") == 1
            again.close()


def test_a_retry_on_another_node_is_a_duplicate() -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    options = ("--store", shared_redis_url(), "--redis-prefix", prefix)
    with twistd_server(*options) as (_, port_a), twistd_server(*options) as (_, port_b):
        a = Peer(f"ws://127.0.0.1:{port_a}/ws")
        data(a.request("login", {"username": "bob"}))
        data(a.request("logout"))  # bob has logged in once: a private message may reach him
        data(a.request("login", {"username": "alice"}))
        frame = {"user": "bob", "content": "psst", "client_id": "node:1"}
        first = data(a.request("message", frame))
        data(a.request("logout"))
        b = Peer(f"ws://127.0.0.1:{port_b}/ws")
        data(b.request("login", {"username": "alice"}))
        assert data(b.request("message", frame)) == {**first, "duplicate": True}
        mine = b.collect(9, "history", {"user": "bob"})
        assert [i["content"] for i in mine] == ["psst"]
        a.close()
        b.close()


def test_memberships_a_killed_sqlite_server_left_open_end_at_the_next_start() -> None:
    with tempfile.TemporaryDirectory() as directory:
        store = f"sqlite:{directory}/chat.db"
        port = free_port()
        with twistd_server("--store", store, port=port) as (proc, _):
            for name in ("alice", "bob"):
                peer = Peer(f"ws://127.0.0.1:{port}/ws")
                data(peer.request("login", {"username": name}))
                data(peer.request("channel.join", {"channel": "general"}))
            os.killpg(proc.pid, signal.SIGKILL)  # no shutdown: no leave items
            proc.wait(10)
        with twistd_server("--store", store, port=port) as (proc, _):
            reader = Peer(f"ws://127.0.0.1:{port}/ws")
            data(reader.request("login", {"username": "carol"}))
            items = reader.collect(9, "history", {"channel": "general"})
            assert [(i["kind"], i["from"]) for i in items] == [
                ("join", "alice"),
                ("join", "bob"),
                ("leave", "alice"),
                ("leave", "bob"),
            ]
            reader.close()
            os.killpg(proc.pid, signal.SIGTERM)  # a clean stop this time
            proc.wait(10)
        with twistd_server("--store", store, port=port):
            reader = Peer(f"ws://127.0.0.1:{port}/ws")
            data(reader.request("login", {"username": "dave"}))
            again = reader.collect(9, "history", {"channel": "general"})
            assert len(again) == 4  # ended once: nothing more at this start
            reader.close()
