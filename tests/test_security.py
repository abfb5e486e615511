"""Token auth, origin checks, the HTTP publish API and TLS, each over real connections."""

from __future__ import annotations

import contextlib
import datetime
import json
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
import websocket
from hypothesis import given
from hypothesis import strategies as st
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
from tests.helpers import server_log, twistd_path, twistd_server, until, within

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


# Tokens for every valid username (issue 12, finding 8), and no input that is not a TokenError


names = st.from_regex(r"[A-Za-z0-9_.\-]{1,32}", fullmatch=True)


@given(username=names, other=names)
def test_a_token_works_for_every_valid_username_and_no_other(username: str, other: str) -> None:
    token = issue_token(SECRET, username, ttl=60, now=1000)
    assert token.startswith("v2.") and token.count(".") == 3
    verify_token(SECRET, token, username, now=1000)
    if other != username:
        with pytest.raises(TokenError, match="is for"):
            verify_token(SECRET, token, other, now=1000)


def test_tokens_of_the_first_format_still_verify_until_they_expire() -> None:
    from chat.auth import _sign

    body = "v1.alice.1060"
    legacy = f"{body}.{_sign(SECRET, body)}"
    verify_token(SECRET, legacy, "alice", now=1000)
    with pytest.raises(TokenError, match="expired"):
        verify_token(SECRET, legacy, "alice", now=1060)
    with pytest.raises(TokenError, match="signature"):  # v1 and v2 sign different texts
        verify_token(SECRET, legacy.replace("v1.alice", "v2.YWxpY2U"), "alice", now=1000)


token_parts = st.text(max_size=30) | st.sampled_from(["", "YWxpY2U", "alice", "1060", "\u00e9"])
shaped_tokens = st.tuples(
    st.sampled_from(["v1", "v2", "v3", ""]), token_parts, token_parts, token_parts
).map(".".join)


@given(
    token=st.text(max_size=120)
    | st.binary(max_size=40).map(lambda b: b.decode("latin-1"))
    | shaped_tokens
)
def test_any_text_is_a_valid_token_or_a_token_error(token: str) -> None:
    with contextlib.suppress(TokenError):
        verify_token(SECRET, token, "alice", now=1000)


def test_odd_tokens_are_token_errors_with_a_reason() -> None:
    good = issue_token(SECRET, "alice", ttl=60, now=1000)
    head, signature = good.rsplit(".", 1)
    for token, reason in [
        (head + "." + signature[:-1] + "\u00e9", "malformed"),  # was compare_digest's TypeError
        (head + "." + signature[:-1] + ("A" if signature[-1] != "A" else "B"), "signature"),
        ("v2.YWxpY2U.\u00b2\u00b3.x", "malformed"),  # digits str.isdigit accepts, int() refuses
        ("v2.YWxpY2U." + "9" * 5000 + ".x", "malformed"),
        ("v2.!!!.1060.x", "signature"),
        ("v2." + "x" * 600, "malformed"),
        ("v3.YWxpY2U.1060.x", "malformed"),
    ]:
        with pytest.raises(TokenError, match=reason):
            verify_token(SECRET, token, "alice", now=1000)
    for value in [0, [], {}, 1.5, True]:
        with pytest.raises(TokenError, match="needs a"):
            verify_token(SECRET, value, "alice")


@ensure
async def test_a_non_ascii_token_signature_is_unauthenticated_and_counted() -> None:
    from twisted.logger import globalLogPublisher

    failures: list[dict] = []

    def observer(event: dict) -> None:
        if event.get("log_failure") is not None:
            failures.append(event)

    globalLogPublisher.addObserver(observer)
    server = await start_server(Settings(store="memory", auth="token", secret=SECRET))
    client = await within(connect(server.url))
    bad = issue_token(SECRET, "alice", 60).rsplit(".", 1)[0] + ".\u00e9\u00e9\u00e9"
    try:
        for _ in range(5):
            with pytest.raises(ChatError) as info:
                await within(client.request("login", {"username": "alice", "token": bad}))
            assert info.value.code == "unauthenticated", info.value
        code, reason = await within(client.closed)
        assert code == 1008 and "too many failed logins: 5" in reason
        assert failures == []  # no traceback
    finally:
        globalLogPublisher.removeObserver(observer)
        await stop_server(server)


def private_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def chat_token(*args: str) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).parent / "chat-token"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


def test_chat_token_issues_a_token_a_dotted_username_logs_in_with(tmp_path: Path) -> None:
    secret = private_file(tmp_path / "secret", "a-secret-of-at-least-16-bytes\n")
    issued = chat_token("j.doe", "--ttl", "5m", "--secret-file", str(secret))
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    with twistd_server("--store", "memory", "--auth", "token", "--secret-file", str(secret)) as (
        proc,
        port,
    ):
        ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws", timeout=10)
        try:
            login = {"username": "j.doe", "token": token}
            ws.send(json.dumps({"type": "request", "id": 1, "route": "login", "data": login}))
            answer = json.loads(ws.recv())
            assert answer["type"] == "response", answer
            assert answer["data"]["username"] == "j.doe"
        finally:
            ws.close()
        assert "Traceback" not in server_log(proc)


def test_chat_token_refuses_a_username_no_login_accepts(tmp_path: Path) -> None:
    secret = private_file(tmp_path / "secret", "a-secret-of-at-least-16-bytes\n")
    for name in ["j doe", "", "x" * 33, "caf\u00e9"]:
        refused = chat_token(name, "--secret-file", str(secret))
        assert refused.returncode == 1 and refused.stdout == ""
        assert "a username is 1-32 characters" in refused.stderr, name


def test_chat_token_help_is_plain_text() -> None:
    shown = chat_token("--help")
    assert shown.returncode == 0 and "``" not in shown.stdout
    assert "login token" in shown.stdout and "--secret-file" in shown.stdout


# Secrets: private files, never in a repr or a log line (issue 12, finding 9)


@pytest.mark.parametrize("option", ["--secret-file", "--api-key-file"])
def test_a_secret_file_others_may_read_stops_twistd_with_one_line(
    tmp_path: Path, option: str
) -> None:
    path = private_file(tmp_path / "secret", "a-secret-of-at-least-16-bytes\n", 0o644)
    command = [twistd_path(), "-n", "--pidfile=", "chat", "--store", "memory", option, str(path)]
    if option == "--secret-file":
        command += ["--auth", "token"]
    ended = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    lines = (ended.stdout + ended.stderr).strip().splitlines()
    assert ended.returncode != 0
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    assert str(path) in lines[0] and f"chmod 600 {path}" in lines[0] and option in lines[0]


def test_the_repr_of_settings_shows_neither_the_secret_nor_the_api_keys() -> None:
    settings = Settings(secret=b"top-secret-bytes-0123", api_keys=("key-one-4567", "key-two-89"))
    text = repr(settings)
    assert "top-secret" not in text and "key-one" not in text and "key-two" not in text
    assert "max_body_size=65536" in text  # the rest is shown


def test_no_log_line_holds_the_secret_or_an_api_key(tmp_path: Path) -> None:
    import urllib.error
    import urllib.request

    secret_text, key = "the-secret-of-this-server-42", "api-key-abcdef-123"
    secret = private_file(tmp_path / "secret", secret_text + "\n")
    keys = private_file(tmp_path / "keys", key + "\n")
    options = ["--store", "memory", "--auth", "token", "--secret-file", str(secret),
               "--api-key-file", str(keys), "--log-format", "json"]  # fmt: skip
    with twistd_server(*options) as (proc, port):
        for bearer in [key, "wrong", key + "x"]:
            post = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/publish",
                data=b'{"channel":"nowhere","content":"x"}',
                headers={"Authorization": f"Bearer {bearer}"},
            )
            with pytest.raises(urllib.error.HTTPError):
                urllib.request.urlopen(post, timeout=10)  # 404 (no channel) or 401
        ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws", timeout=10)
        for token in [issue_token(secret_text.encode(), "eve", 60), "v2.x.1.y", "garbage"]:
            login = {"username": "alice", "token": token}
            ws.send(json.dumps({"type": "request", "id": 1, "route": "login", "data": login}))
            assert json.loads(ws.recv())["error"]["code"] == "unauthenticated"
        ws.close()
        log = server_log(proc)
    assert log and secret_text not in log and key not in log


# The origin policy warning (issue 12, finding 9)


def test_origin_policy_warnings() -> None:
    from chat.web.origins import origin_policy_warnings

    exposed = ["tcp:8080", "tcp:8080:interface=0.0.0.0", "tcp6:8080:interface=\\:\\:",
               "ssl:8443:privateKey=k.pem:certKey=c.pem", "tcp:80:interface=192.0.2.7"]  # fmt: skip
    local = ["tcp:8080:interface=127.0.0.1", "tcp:8080:interface=127.0.1.1",
             "tcp6:8080:interface=\\:\\:1", "tcp:8080:interface=localhost",
             "unix:/run/chat.sock"]  # fmt: skip
    for listen in exposed:
        (line,) = origin_policy_warnings(Settings(listen=(local[0], listen)))
        assert listen in line and "--allowed-host" in line and "DNS-rebinding" in line
        assert origin_policy_warnings(Settings(listen=(listen,), allowed_hosts=("a",))) == []
        assert origin_policy_warnings(Settings(listen=(listen,), allowed_origins=("x",))) == []
    assert origin_policy_warnings(Settings(listen=tuple(local))) == []
