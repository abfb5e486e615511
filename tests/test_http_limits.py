"""What one HTTP connection may cost (docs/operations.md): bodies, head deadlines, connection
limits, allowed hosts, and errors before authentication, each checked over real sockets
against ``twistd -n chat`` or an in-process server. Issue 12, findings 3, 5, 7 and 9."""

from __future__ import annotations

import json
import os
import select
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import websocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher

from chat.client import connect
from chat.server import make_node
from chat.settings import Settings
from chat.web.site import make_site
from tests.conftest import RunningServer, start_server, stop_server
from tests.helpers import WAIT, server_log, twistd_server, until, within
from tests.test_security import self_signed

ensure = pytest_twisted.ensureDeferred
MiB = 1 << 20
KEY = "publish-key-0123"


# Raw HTTP over a socket (blocking: run them in a thread when the server is in-process)


def exchange(port: int, data: bytes, timeout: float = WAIT) -> bytes:
    """Send ``data`` on a new connection and return everything received until the close."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_until_closed(sock)


def read_until_closed(sock: socket.socket) -> bytes:
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except ConnectionResetError:
        pass  # the answer came before the reset; Linux keeps it readable
    return answer


def status(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer.split(b" ", 2)[1])


def error_of(answer: bytes) -> dict[str, str]:
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    error: dict[str, str] = body["error"]
    return error


def request(method: str, path: str, port: int, *headers: str, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    return ("\r\n".join([*lines, *headers]) + "\r\n\r\n").encode() + body


def send_until_answered(sock: socket.socket, pieces: Iterator[bytes]) -> int:
    """Send ``pieces`` until they run out or the server answers; returns the bytes sent."""
    sent = 0
    for piece in pieces:
        view = memoryview(piece)
        while view:
            readable, writable, _ = select.select([sock], [sock], [], WAIT)
            if readable:
                return sent
            if not writable:
                raise TimeoutError("the server neither read nor answered")
            try:
                n = sock.send(view)
            except (BrokenPipeError, ConnectionResetError):
                return sent
            sent += n
            view = view[n:]
    return sent


def spool_files(pid: int) -> list[str]:
    """Deleted files under /tmp that ``pid`` holds open: twisted.web's body spool files."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("/tmp/") and target.endswith("(deleted)"):
            found.append(target)
    return found


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def assert_clean_log(proc: Any) -> None:
    log = server_log(proc)
    assert "Traceback" not in log and "Unhandled" not in log, log[-3000:]


@pytest.fixture(scope="module")
def twistd_http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, int]]:
    """``twistd -n chat`` with the publish API on and a short head deadline."""
    keys = tmp_path_factory.mktemp("keys") / "keys"
    keys.write_text(KEY + "\n")
    keys.chmod(0o600)
    with twistd_server(
        "--store", "memory", "--api-key-file", str(keys), "--header-timeout", "2"
    ) as running:
        yield running


# 1. Bodies: refused from the head, never spooled


def test_a_huge_content_length_is_refused_with_413_before_the_body_is_sent(
    twistd_http: tuple[Any, int],
) -> None:
    proc, port = twistd_http
    head = request("POST", "/api/publish", port, f"Content-Length: {300 * MiB}",
                   "Content-Type: application/json")  # fmt: skip
    answer = exchange(port, head)  # not one byte of the body: the answer must come anyway
    assert status(answer) == 413 and error_of(answer)["code"] == "too_large"
    assert "65536" in error_of(answer)["message"]
    assert spool_files(proc.pid) == []
    assert_clean_log(proc)


def test_a_chunked_body_is_refused_as_it_passes_the_limit_and_never_spooled(
    twistd_http: tuple[Any, int],
) -> None:
    proc, port = twistd_http
    before = rss(proc.pid)
    total = 64 * MiB
    chunk = b"%x\r\n" % MiB + b"x" * MiB + b"\r\n"
    spooled: list[str] = []

    def pieces() -> Iterator[bytes]:
        for _ in range(total // MiB):
            spooled.extend(spool_files(proc.pid))
            yield chunk
        yield b"0\r\n\r\n"

    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(request("POST", "/", port, "Transfer-Encoding: chunked"))
        sent = send_until_answered(sock, pieces())
        answer = read_until_closed(sock)
    assert status(answer) == 413
    assert error_of(answer)["message"] == "this route takes no request body"
    assert sent < total  # the server stopped reading: the rest never left the client
    assert spooled == [] and spool_files(proc.pid) == []
    assert rss(proc.pid) - before < 16 * MiB  # 64 MiB were offered
    assert_clean_log(proc)


def test_the_publish_route_takes_bodies_up_to_the_limit_chunked_or_not(
    twistd_http: tuple[Any, int],
) -> None:
    proc, port = twistd_http
    auth = f"Authorization: Bearer {KEY}"
    good = json.dumps({"channel": "nowhere", "content": "x" * 1000}).encode()
    answer = exchange(port, request("POST", "/api/publish", port, auth,
                                    f"Content-Length: {len(good)}", body=good))  # fmt: skip
    assert status(answer) == 404  # read whole and handled: the channel does not exist
    chunked = b"%x\r\n" % len(good) + good + b"\r\n0\r\n\r\n"
    answer = exchange(port, request("POST", "/api/publish", port, auth,
                                    "Transfer-Encoding: chunked", body=chunked))  # fmt: skip
    assert status(answer) == 404
    big = b"x" * 65537
    chunked = b"%x\r\n" % len(big) + big + b"\r\n0\r\n\r\n"
    answer = exchange(port, request("POST", "/api/publish", port, auth,
                                    "Transfer-Encoding: chunked", body=chunked))  # fmt: skip
    assert status(answer) == 413 and "65536" in error_of(answer)["message"]
    assert spool_files(proc.pid) == []


def test_without_a_key_the_publish_route_takes_no_body(twistd_http: tuple[Any, int]) -> None:
    proc, port = twistd_http
    for auth in [(), ("Authorization: Bearer wrong",), ("Authorization: Basic eDp5",)]:
        head = request("POST", "/api/publish", port, *auth, "Transfer-Encoding: chunked")
        answer = exchange(port, head)  # no body sent: the answer comes from the head
        assert status(answer) == 401 and error_of(answer)["code"] == "unauthenticated", auth
        assert b'WWW-Authenticate: Bearer realm="chat"' in answer
    assert spool_files(proc.pid) == []


def test_bearer_keys_are_compared_as_bytes() -> None:
    from chat.web.apikeys import bearer_authorized

    keys = ("k3y", "other-key")
    assert bearer_authorized(b"Bearer k3y", keys) and bearer_authorized(b"bearer  other-key ", keys)
    for header in [None, b"", b"Bearer", b"Bearer ", b"Basic k3y", b"Bearer k\xc3\xa9y",
                   "Bearer ключ".encode(), b"Bearer \xff", b"Bearer k3y\x80"]:  # fmt: skip
        assert not bearer_authorized(header, keys), header


def test_routes_without_a_body_take_none(twistd_http: tuple[Any, int]) -> None:
    _, port = twistd_http
    for method, path in [("GET", "/"), ("POST", "/"), ("GET", "/ws"), ("GET", "/api/publish"),
                         ("POST", "/healthz")]:  # fmt: skip
        answer = exchange(port, request(method, path, port, "Content-Length: 5", body=b"hello"))
        assert status(answer) == 413, (method, path)
        assert error_of(answer)["message"] == "this route takes no request body"
    assert status(exchange(port, request("GET", "/", port, "Content-Length: 0"))) == 200


def test_the_body_limit_follows_the_route_as_twisted_web_routes_it() -> None:
    from chat.web.channel import body_limit

    on = Settings(store="memory", api_keys=("k",), max_body_size=100)
    for path in [b"/api/publish", b"/api/%70ublish", b"/api/publish/", b"/api/publish?x=1"]:
        assert body_limit(on, b"POST", path) == 100, path
    for method, path in [(b"GET", b"/api/publish"), (b"post", b"/api/publish"),
                         (b"POST", b"/API/publish"), (b"POST", b"//api/publish"),
                         (b"POST", b"/")]:  # fmt: skip
        assert body_limit(on, method, path) == 0, (method, path)
    assert body_limit(Settings(store="memory"), b"POST", b"/api/publish") == 0  # API off


@ensure
async def test_max_body_size_is_the_publish_limit() -> None:
    server = await start_server(Settings(store="memory", api_keys=("k",), max_body_size=100))
    port = server.port.getHost().port
    try:
        for size, expected in [(100, 400), (101, 413)]:
            post = request("POST", "/api/publish", port, "Authorization: Bearer k",
                           f"Content-Length: {size}", body=b"x" * size)  # fmt: skip
            answer = await within(deferToThread(exchange, port, post))
            assert status(answer) == expected, size
    finally:
        await stop_server(server)


# 2. Slow clients: deadlines, not idle timers


def trickle(sock: socket.socket, data: bytes, every: float, stop: threading.Event) -> None:
    """Send ``data`` one byte every ``every`` seconds until ``stop`` or the server closes."""
    for i in range(len(data)):
        if stop.wait(every):  # the attack's pace, not a synchronisation
            return
        try:
            sock.send(data[i : i + 1])
        except OSError:
            return


def slow_client(port: int, first: bytes, rest: bytes) -> tuple[bytes, bool]:
    """Send ``first``, then ``rest`` a byte at a time; (the answer, whether ``rest`` was sent)."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(first)
        stop = threading.Event()
        sender = threading.Thread(target=trickle, args=(sock, rest, 0.05, stop))
        sender.start()
        try:
            answer = read_until_closed(sock)
        finally:
            finished = not sender.is_alive()
            stop.set()
            sender.join()
    return answer, finished


def test_a_head_sent_one_byte_at_a_time_is_dropped_at_the_header_timeout(
    twistd_http: tuple[Any, int],
) -> None:
    proc, port = twistd_http
    head = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Slow: ".encode()
    answer, finished = slow_client(port, head, b"a" * 10_000 + b"\r\n\r\n")  # 500 s at this pace
    assert not finished
    assert status(answer) == 408 and error_of(answer)["code"] == "timeout"
    assert "request head did not arrive within 2 s" in error_of(answer)["message"]
    assert_clean_log(proc)


@ensure
async def test_a_slow_body_is_dropped_at_the_body_timeout() -> None:
    server = await start_server(
        Settings(store="memory", api_keys=("k",), header_timeout=30, body_timeout=0.3)
    )
    port = server.port.getHost().port
    head = request("POST", "/api/publish", port, "Authorization: Bearer k", "Content-Length: 60000")
    try:
        answer, finished = await within(deferToThread(slow_client, port, head, b"x" * 60000))
        assert not finished
        assert status(answer) == 408 and "request body did not arrive within 0.3 s" in (
            error_of(answer)["message"]
        )
    finally:
        await stop_server(server)


@ensure
async def test_an_idle_keep_alive_connection_is_closed_at_the_header_timeout() -> None:
    server = await start_server(Settings(store="memory", header_timeout=0.3))
    port = server.port.getHost().port

    def keep_alive() -> list[bytes]:
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
            sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            return read_until_closed(sock).split(b"HTTP/1.1 ")[1:]

    try:
        answers = await within(deferToThread(keep_alive))
        assert [int(a.split(b" ", 1)[0]) for a in answers] == [200, 408]
    finally:
        await stop_server(server)


@ensure
async def test_an_open_websocket_is_not_subject_to_the_header_timeout() -> None:
    server = await start_server(Settings(store="memory", header_timeout=0.3))
    port = server.port.getHost().port
    client = await within(connect(server.url))
    try:
        await within(client.login("alice"))
        # A connection opened after the WebSocket, and idle, is dropped at its deadline ...
        answer = await within(deferToThread(exchange, port, b""))
        assert status(answer) == 408
        # ... by then the WebSocket's own deadline has long passed, and it is still served.
        assert (await within(client.join("general")))["channel"] == "general"
        assert not client.closed.called
    finally:
        await within(client.close())
        await stop_server(server)


# 2. Connection limits at accept, for every connection


def limits_of(server: RunningServer) -> Any:
    """The server's :class:`~chat.web.connections.ConnectionLimits`, to wait on its counts."""
    from chat.web.connections import ConnectionLimits

    factory = server.port.factory
    assert isinstance(factory, ConnectionLimits), "this server counts no connections"
    return factory


def open_idle(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=WAIT)


def refused_answer(port: int) -> bytes:
    """A new connection that sends nothing: what the server says before closing it."""
    with open_idle(port) as sock:
        return read_until_closed(sock)


@ensure
async def test_the_per_address_limit_applies_to_plain_http_connections() -> None:
    server = await start_server(Settings(store="memory", max_connections_per_ip=2))
    port = server.port.getHost().port
    limits = limits_of(server)
    idle = [await within(deferToThread(open_idle, port)) for _ in range(2)]
    try:
        await until(lambda: limits.by_host.get("127.0.0.1") == 2, what="two counted")
        answer = await within(deferToThread(refused_answer, port))
        assert status(answer) == 503 and error_of(answer)["code"] == "too_many_connections"
        assert "at most 2 connections per address" in error_of(answer)["message"]
        idle.pop().close()
        await until(lambda: limits.total == 1, what="the closed one released")
        ok = await within(deferToThread(exchange, port, request("GET", "/healthz", port)))
        assert status(ok) == 200
    finally:
        for sock in idle:
            sock.close()
        await stop_server(server)


@ensure
async def test_a_websocket_counts_from_accept_until_it_closes() -> None:
    server = await start_server(Settings(store="memory", max_connections_per_ip=2))
    port = server.port.getHost().port
    limits = limits_of(server)
    client = await within(connect(server.url))
    idle = await within(deferToThread(open_idle, port))
    try:
        await within(client.login("alice"))
        assert limits.total == 2 and limits.by_host["127.0.0.1"] == 2  # counted once each
        answer = await within(deferToThread(refused_answer, port))
        assert status(answer) == 503
        await within(client.close())
        await until(lambda: limits.total == 1, what="the WebSocket released")
        again = await within(connect(server.url))  # the WebSocket's place is free again
        await within(again.close())
    finally:
        idle.close()
        await stop_server(server)


@ensure
async def test_a_websocket_over_tls_is_counted_and_released(tmp_path: Path) -> None:
    key, cert, pem = self_signed(tmp_path)
    node, _backend = make_node(Settings(store="memory"), reactor)
    endpoint = serverFromString(
        reactor, f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    )
    site = make_site(node)
    port = await within(endpoint.listen(site))
    tls = optionsForClientTLS("localhost", trustRoot=Certificate.loadPEM(pem))
    try:
        client = await within(connect(f"wss://localhost:{port.getHost().port}/ws", tls=tls))
        await within(client.login("alice"))
        assert site.total == 1
        await within(client.close())
        await until(lambda: site.total == 0, what="the TLS WebSocket released")
    finally:
        await within(port.stopListening())


@ensure
async def test_max_connections_caps_every_kind_of_connection() -> None:
    server = await start_server(Settings(store="memory", max_connections=2))
    port = server.port.getHost().port
    limits = limits_of(server)
    client = await within(connect(server.url))
    idle = await within(deferToThread(open_idle, port))
    try:
        await until(lambda: limits.total == 2, what="both counted")
        answer = await within(deferToThread(refused_answer, port))
        assert status(answer) == 503 and "maximum of 2 connections" in error_of(answer)["message"]
    finally:
        idle.close()
        await within(client.close())
        await stop_server(server)


# 3. Errors before authentication: never a 500, never a traceback


def test_a_non_ascii_bearer_key_is_401_not_500(twistd_http: tuple[Any, int]) -> None:
    proc, port = twistd_http
    for key in ["k\u00e9y".encode(), b"\xff\xfe", "ключ".encode(), KEY.encode() + b"\x80"]:
        head = request("POST", "/api/publish", port, "Content-Length: 2").replace(
            b"Connection: close", b"Connection: close\r\nAuthorization: Bearer " + key
        )
        answer = exchange(port, head + b"{}")
        assert status(answer) == 401 and error_of(answer)["code"] == "unauthenticated", key
    assert_clean_log(proc)


def test_paths_no_file_can_have_are_404_not_500(twistd_http: tuple[Any, int]) -> None:
    proc, port = twistd_http
    for path in ["/index.html%00", "/%00", "/%ff", "/%c3%28/x", "/a%00b/c", "/..%2f..%2fetc",
                 "/" + "a" * 5000]:  # fmt: skip
        assert status(exchange(port, request("GET", path, port))) == 404, path
    assert_clean_log(proc)


def test_a_malformed_head_gets_a_400_that_says_so(twistd_http: tuple[Any, int]) -> None:
    proc, port = twistd_http
    for head in [b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n", b"NONSENSE\r\n\r\n",
                 b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"]:  # fmt: skip
        answer = exchange(port, head)
        assert status(answer) == 400 and error_of(answer)["code"] == "bad_request", head
    answer = exchange(port, b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n")
    assert status(answer) == 431
    many = b"".join(b"X-%d: v\r\n" % n for n in range(101))  # at most 100 headers
    answer = exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert status(answer) == 400
    assert_clean_log(proc)


pieces_of_targets = st.sampled_from(list("/abcAZ09.-_~%:@!$&'()*+,;=?[]\x00\x7f\u00e9\U0001f600"))
pieces_of_targets |= st.sampled_from(["%00", "%ff", "%2f", "%2e%2e", "..", "//", "%c3%28", "%"])
targets = st.lists(pieces_of_targets, max_size=20).map("".join)
methods = st.sampled_from(["GET", "POST", "HEAD", "OPTIONS", "PUT"])


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(path=targets, authorization=st.binary(max_size=30), method=methods)
def test_no_request_target_or_key_produces_a_500(
    twistd_http: tuple[Any, int], path: str, authorization: bytes, method: str
) -> None:
    _, port = twistd_http
    target = ("/" + path).encode("utf-8", "surrogateescape").replace(b" ", b"%20")
    target = target.replace(b"\r", b"").replace(b"\n", b"").replace(b"#", b"%23")
    auth = authorization.replace(b"\r", b"").replace(b"\n", b"")
    body = b"\r\nContent-Length: 2\r\n\r\n{}" if method == "POST" else b"\r\n\r\n"
    head = (
        method.encode() + b" " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Authorization: Bearer " + auth + body
    )
    answer = exchange(port, head)
    # 501: a method no resource here implements (PUT, OPTIONS), as RFC 9110 says; never a 500.
    assert status(answer) < 500 or (status(answer) == 501 and method in ("PUT", "OPTIONS")), (
        answer[:300]
    )


def test_the_fuzzed_server_logged_no_traceback(twistd_http: tuple[Any, int]) -> None:
    assert_clean_log(twistd_http[0])


# 5. Allowed hosts: a DNS-rebinding page is refused with 421


@ensure
async def test_allowed_hosts_refuse_any_other_host_with_421() -> None:
    server = await start_server(Settings(store="memory", allowed_hosts=("chat.example.com",)))
    port = server.port.getHost().port

    def get(host: str) -> bytes:
        head = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
        return exchange(port, head)

    def handshake(host: str) -> int:
        try:
            ws = websocket.create_connection(
                f"ws://127.0.0.1:{port}/ws", timeout=WAIT, host=host, origin=f"http://{host}"
            )
        except websocket.WebSocketBadStatusException as exc:
            return int(exc.status_code)
        ws.close()
        return 101

    try:
        answer = await within(deferToThread(get, "rebound.evil.example:8080"))
        assert status(answer) == 421 and error_of(answer)["code"] == "unknown_host"
        assert status(await within(deferToThread(get, f"Chat.Example.com:{port}"))) == 200
        # The rebinding page: Host and Origin agree, both the attacker's name.
        assert await within(deferToThread(handshake, f"evil.example:{port}")) == 421
        assert await within(deferToThread(handshake, f"chat.example.com:{port}")) == 101
    finally:
        await stop_server(server)


# Log lines clients cause are throttled


async def assert_flood_is_throttled(
    client: Callable[[int], None], times: int, line: str, key: str, throttle: Callable[[Any], Any]
) -> None:
    """Run ``client(port)`` ``times`` times against a fresh server: lines containing ``line``
    are written for the throttle's burst of 20, then about 1 a second, and the report of the
    throttle (``throttle(server)``) names ``key`` with the count of every line held back."""
    server = await start_server(Settings(store="memory"))
    port = server.port.getHost().port
    events: list[dict[str, Any]] = []
    observer: Callable[[dict[str, Any]], None] = events.append
    globalLogPublisher.addObserver(observer)

    def flood() -> None:
        for _ in range(times):
            client(port)

    try:
        await within(deferToThread(flood), 60)
        written = [e for e in events if line in str(e.get("log_format"))]
        assert 20 <= len(written) < times  # a burst of 20, then 1 a second
        throttle(server).flush()
        report = [e for e in events if e.get("log_throttled")]
        assert [e["key"] for e in report] == [key]
        assert report[0]["count"] == times - len(written)
    finally:
        globalLogPublisher.removeObserver(observer)
        await stop_server(server)


def oversized_get(port: int) -> None:
    exchange(port, request("GET", "/", port, "Content-Length: 1", body=b"x"))


@ensure
async def test_client_caused_log_lines_are_throttled() -> None:
    await assert_flood_is_throttled(
        oversized_get, 120, "refused", "http.413", lambda server: limits_of(server).site.throttle
    )


def bad_websocket_client(port: int) -> None:
    """Upgrade, send an unmasked text frame (RFC 6455: the server must fail the connection),
    read the close frame, and go."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(
            (f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
             "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
             "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat.v1.json\r\n\r\n").encode()
        )  # fmt: skip
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        sock.sendall(b"\x81\x05hello")  # no mask bit
        sock.recv(4096)  # the close frame (1002)


@ensure
async def test_the_lines_autobahn_writes_about_bad_clients_are_throttled() -> None:
    await assert_flood_is_throttled(
        bad_websocket_client, 80, "failing WebSocket", "ws.autobahn", lambda s: s.node.throttle
    )
