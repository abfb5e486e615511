"""Token auth, origin checks, the HTTP publish API and TLS, each over real connections."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest
import pytest_twisted
import websocket
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers

from chat.auth import TokenError, issue_token, verify_token
from chat.client import ChatError, connect
from chat.server import make_node
from chat.settings import Settings, parse_duration
from chat.web.origins import origin_allowed
from chat.web.site import make_site
from tests.conftest import start_server, stop_server
from tests.helpers import until, within

ensure = pytest_twisted.ensureDeferred
SECRET = b"0123456789abcdef-test-secret"


# Tokens, without a reactor


def test_a_token_verifies_for_its_username_until_it_expires() -> None:
    token = issue_token(SECRET, "alice", ttl=60, now=1000)
    verify_token(SECRET, token, "alice", now=1059)
    for secret, name, now, reason in [
        (SECRET, "alice", 1060, "expired"),
        (SECRET, "bob", 1000, "is for 'alice'"),
        (b"another-secret-of-16+", "alice", 1000, "signature"),
    ]:
        with pytest.raises(TokenError, match=reason):
            verify_token(secret, token, name, now=now)
    with pytest.raises(TokenError, match="malformed"):
        verify_token(SECRET, "v1.alice.x", "alice")
    with pytest.raises(TokenError, match="needs a"):
        verify_token(SECRET, None, "alice")
    forged = token.replace(".1060.", ".9999.")
    with pytest.raises(TokenError, match="signature"):
        verify_token(SECRET, forged, "alice", now=1000)


def test_durations() -> None:
    assert [parse_duration(t) for t in ["90", "90s", "15m", "1h", "7d"]] == [
        90,
        90,
        900,
        3600,
        604800,
    ]
    for bad in ["", "h", "-1h", "0m", "3x", "soon"]:
        with pytest.raises(ValueError):
            parse_duration(bad)


@ensure
async def test_token_login_and_each_failure_mode() -> None:
    server = await start_server(Settings(store="memory", auth="token", secret=SECRET))
    client = await within(connect(server.url))
    try:
        for data, reason in [
            ({"username": "alice"}, "needs a"),
            ({"username": "alice", "token": "garbage"}, "malformed"),
            ({"username": "alice", "token": issue_token(SECRET, "bob", 60)}, "is for 'bob'"),
            ({"username": "alice", "token": issue_token(SECRET, "alice", -1)}, "expired"),
        ]:
            with pytest.raises(ChatError) as info:
                await within(client.request("login", data))
            assert info.value.code == "unauthenticated" and reason in info.value.message
        token = issue_token(SECRET, "alice", 60)
        answer = await within(client.request("login", {"username": "alice", "token": token}))
        assert answer["username"] == "alice"
    finally:
        await within(client.close())
        await stop_server(server)


@ensure
async def test_five_failed_logins_close_the_connection_with_1008() -> None:
    server = await start_server(Settings(store="memory", auth="token", secret=SECRET))
    client = await within(connect(server.url))
    try:
        failures = [client.request("login", {"username": "x", "token": "bad"}) for _ in range(5)]
        for failure in failures:
            with pytest.raises(ChatError):
                await within(failure)
        code, reason = await within(client.closed)
        assert code == 1008 and "failed logins" in reason
    finally:
        await stop_server(server)


# Origins


def test_origin_rules() -> None:
    assert origin_allowed(None, "chat.example.com", [])
    assert origin_allowed("https://chat.example.com", "chat.example.com", [])
    assert not origin_allowed("https://evil.example", "chat.example.com", [])
    assert not origin_allowed("null", "chat.example.com", [])
    patterns = ["https://*.example.com", "http://localhost:3000"]
    assert origin_allowed("https://app.example.com", "x", patterns)
    assert origin_allowed("http://localhost:3000", "x", patterns)
    assert not origin_allowed("https://example.com.evil.net", "x", patterns)
    assert not origin_allowed("https://a.b/x.example.com", "x", patterns)
    assert not origin_allowed("http://app.example.com", "x", patterns)


def handshake(url: str, origin: str | None) -> int:
    """The HTTP status of a WebSocket handshake (101 when accepted)."""
    try:
        ws = websocket.create_connection(
            url, timeout=5, origin=origin, suppress_origin=origin is None
        )
    except websocket.WebSocketBadStatusException as exc:
        return int(exc.status_code)
    ws.close()
    return 101


@ensure
async def test_handshake_origin_checks() -> None:
    from twisted.internet.threads import deferToThread

    default = await start_server()
    configured = await start_server(
        Settings(store="memory", allowed_origins=("https://*.example.com",))
    )
    host = default.url.removeprefix("ws://").removesuffix("/ws")
    try:
        cases = [
            (default.url, None, 101),
            (default.url, f"http://{host}", 101),
            (default.url, "https://evil.example", 403),
            (configured.url, "https://app.example.com", 101),
            (configured.url, f"http://{host}", 403),
        ]
        for url, origin, status in cases:
            assert await within(deferToThread(handshake, url, origin)) == status, origin
    finally:
        await stop_server(default)
        await stop_server(configured)


# The HTTP publish API


async def post(url: str, body: bytes, key: str | None) -> tuple[int, dict]:
    headers = Headers({b"content-type": [b"application/json"]})
    if key is not None:
        headers.addRawHeader(b"authorization", f"Bearer {key}".encode())
    from io import BytesIO

    from twisted.web.client import FileBodyProducer

    response = await within(
        Agent(reactor).request(b"POST", url.encode(), headers, FileBodyProducer(BytesIO(body)))
    )
    return response.code, json.loads(await within(readBody(response)))


@ensure
async def test_publish_api_statuses_and_delivery() -> None:
    server = await start_server(Settings(store="memory", api_keys=("k3y",)))
    api = server.url.replace("ws://", "http://").removesuffix("/ws") + "/api/publish"
    member = await within(connect(server.url))
    try:
        await within(member.login("alice"))
        feed = member.messages()
        await within(member.join("general"))
        good = json.dumps({"channel": "general", "content": "deploy done", "from": "ci"})
        assert (await post(api, good.encode(), None))[0] == 401
        assert (await post(api, good.encode(), "wrong"))[0] == 401
        assert (await post(api, b"{nope", "k3y"))[0] == 400
        status, body = await post(api, b'{"channel":"general"}', "k3y")
        assert status == 400 and body["error"]["code"] == "invalid_data"
        assert (await post(api, b'{"channel":"void","content":"x"}', "k3y"))[0] == 404
        assert (await post(api, b"x" * 70000, "k3y"))[0] == 413
        status, body = await post(api, good.encode(), "k3y")
        assert status == 200 and body["channel"] == "general" and body["seq"] == 2
        assert (await within(feed.next()))["kind"] == "join"
        item = await within(feed.next())
        assert item["from"] == "api:ci" and item["content"] == "deploy done"
        status, body = await post(api, b'{"channel":"general","content":"x"}', "k3y")
        assert status == 200 and (await within(feed.next()))["from"] == "api:server"
    finally:
        await within(member.close())
        await stop_server(server)


# TLS


def self_signed(directory: Path) -> tuple[Path, Path, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    key_path, cert_path = directory / "key.pem", directory / "cert.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(pem)
    return key_path, cert_path, pem


@ensure
async def test_tls_round_trip_with_the_client_library(tmp_path: Path) -> None:
    key, cert, pem = self_signed(tmp_path)
    node, _backend = make_node(Settings(store="memory"), reactor)
    endpoint = serverFromString(
        reactor, f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    )
    port = await within(endpoint.listen(make_site(node)))
    tls = optionsForClientTLS("localhost", trustRoot=Certificate.loadPEM(pem))
    client = await within(connect(f"wss://localhost:{port.getHost().port}/ws", tls=tls))
    try:
        await within(client.login("alice"))
        feed = client.messages()
        await within(client.join("secure"))
        await within(client.send("secure", "over TLS"))
        items = [await within(feed.next()) for _ in range(2)]
        assert items[1]["content"] == "over TLS"
    finally:
        await within(client.close())
        await until(lambda: not node.connections)
        await within(port.stopListening())
