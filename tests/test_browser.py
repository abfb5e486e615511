"""The page at ``/`` in a real browser: Debian's Chromium driven by Playwright's sync API.

The server runs as ``twistd -n chat`` in a subprocess, behind a small TCP proxy owned by the
test, so a test can cut the browser's connection (or point it at a restarted server) exactly
when it wants. Every wait is an ``expect``/``wait_for`` with a timeout; nothing sleeps.
Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import websocket
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.helpers import twistd_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
WAIT_MS = 10_000
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 780}

pytestmark = pytest.mark.timeout(120)
expect.set_options(timeout=WAIT_MS)


class Proxy:
    """A TCP relay to the server: ``cut()`` drops every connection, ``hold()`` parks new ones
    (accepted but not relayed: the browser's WebSocket stays CONNECTING, without console
    errors) until ``release()``, and ``upstream`` can be pointed at another server."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.open_gate = threading.Event()
        self.open_gate.set()
        self.accepted = threading.Semaphore(0)
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        self.accepted.release()
        self.open_gate.wait()
        try:
            server = socket.create_connection(("127.0.0.1", self.upstream))
        except OSError:
            client.close()
            return
        with self.lock:
            self.pairs.append((client, server))
        for a, b in ((client, server), (server, client)):
            threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for pair in pairs:
            for s in pair:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def hold(self) -> None:
        self.open_gate.clear()

    def release(self) -> None:
        self.open_gate.set()

    def close(self) -> None:
        self.release()
        self.listener.close()
        self.cut()


class Peer:
    """A Python client speaking the protocol with websocket-client (no reactor needed)."""

    def __init__(self, port: int, username: str) -> None:
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws", timeout=WAIT_MS / 1000)
        self.frames: list[dict[str, Any]] = []
        self.next_id = 10
        self.username = username
        answer = self.request("login", {"username": username})
        assert answer["type"] == "response", answer
        self.ws.send(json.dumps({"type": "stream", "id": 1, "route": "messages"}))

    def wait(self, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        for i, frame in enumerate(self.frames):
            if match(frame):
                return self.frames.pop(i)
        while True:  # each recv times out after WAIT_MS
            frame = json.loads(self.ws.recv())
            if match(frame):
                return frame
            self.frames.append(frame)

    def request(self, route: str, data: Any) -> dict[str, Any]:
        self.next_id += 1
        frame_id = self.next_id
        self.ws.send(json.dumps({"type": "request", "id": frame_id, "route": route, "data": data}))
        return self.wait(lambda f: f.get("id") == frame_id)

    def item(self, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The next feed item matching ``match``."""
        frame = self.wait(lambda f: f.get("id") == 1 and f["type"] == "next" and match(f["data"]))
        return frame["data"]

    def say(self, channel: str | None, content: str, user: str | None = None) -> None:
        target = {"channel": channel} if channel else {"user": user}
        answer = self.request("message", {**target, "content": content})
        assert answer["type"] == "response", answer

    def close(self) -> None:
        self.ws.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install -y chromium"
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def server() -> Iterator[tuple[Proxy, int]]:
    """(proxy, server port): the page is loaded through the proxy."""
    with twistd_server("--store", "memory") as (_, port):
        proxy = Proxy(port)
        yield proxy, port
        proxy.close()


class Pages:
    """Opens pages in fresh browser contexts and records their console errors."""

    def __init__(self, browser: Browser, port: int) -> None:
        self.browser = browser
        self.url = f"http://127.0.0.1:{port}/"
        self.errors: list[str] = []
        self.contexts: list[Any] = []

    def open(self, viewport: dict[str, int] = DESKTOP) -> Page:
        context = self.browser.new_context(viewport=viewport)
        self.contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        page.goto(self.url)
        return page

    def login(self, username: str, viewport: dict[str, int] = DESKTOP) -> Page:
        page = self.open(viewport)
        expect(page.locator("#username")).to_be_focused()  # keyboard-first: type and Enter
        page.keyboard.type(username)
        page.keyboard.press("Enter")
        expect(page.locator("#status")).to_have_text("online")
        expect(page.locator("#pane-title")).to_have_text("# general")
        return page

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def pages(browser: Browser, server: tuple[Proxy, int]) -> Iterator[Pages]:
    opened = Pages(browser, server[0].port)
    yield opened
    opened.close()
    assert opened.errors == [], f"console errors: {opened.errors}"


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def pane(page: Page) -> Any:
    return page.locator(".messages:not([hidden])")


def say(page: Page, text: str) -> None:
    page.locator("#composer-input").fill(text)
    page.locator("#composer-input").press("Enter")


def test_two_browsers_chat_in_channels_and_privately(pages: Pages) -> None:
    alice = pages.login("alice")
    bob = pages.login("bob", PHONE)

    expect(alice.locator("#members")).to_contain_text("bob")
    expect(bob.locator("#members")).to_contain_text("bob (you)")
    expect(bob.locator("#members")).to_contain_text("alice")
    expect(pane(alice)).to_contain_text("bob joined")

    say(alice, "hello bob")
    expect(pane(bob)).to_contain_text("hello bob")
    # user text is shown as text, never parsed as HTML
    say(bob, '<img src=x onerror="window.pwned=1"> & <b>bold</b>')
    expect(pane(alice)).to_contain_text('<img src=x onerror="window.pwned=1"> & <b>bold</b>')
    expect(alice.locator(".messages img, .messages b")).to_have_count(0)
    assert alice.evaluate("window.pwned") is None

    # create a channel by joining it; bob sees it listed with its user count and joins
    alice.locator("#join-name").fill("random")
    alice.locator("#join-name").press("Enter")
    expect(alice.locator("#pane-title")).to_have_text("# random")
    bob.locator("#toggle-sidebar").click()
    random_entry = bob.locator("#all-channels button", has_text="random")
    expect(random_entry).to_contain_text("1 user", timeout=WAIT_MS)
    random_entry.click()
    expect(bob.locator("#pane-title")).to_have_text("# random")
    expect(pane(alice)).to_contain_text("bob joined")
    expect(alice.locator("#members")).to_contain_text("bob")
    say(bob, "random thoughts")
    expect(pane(alice)).to_contain_text("random thoughts")

    # a message in a channel that is not shown counts as unread
    bob.locator("#toggle-sidebar").click()
    bob.locator("#joined button", has_text="general").click()
    expect(bob.locator("#pane-title")).to_have_text("# general")
    say(alice, "more randomness")
    expect(bob.locator("#joined button", has_text="random").locator(".badge")).to_have_text("1")

    # private conversation: alice opens it from the member list
    alice.locator("#joined button", has_text="general").click()
    alice.locator("#members button", has_text="bob").click()
    expect(alice.locator("#pane-title")).to_have_text("@ bob (private)")
    say(alice, "psst, just between us")
    expect(pane(alice)).to_contain_text("psst, just between us")
    expect(bob.locator("#total-unread")).to_have_text("2")
    bob.locator("#toggle-sidebar").click()
    bob.locator("#privates button", has_text="alice").click()
    expect(pane(bob)).to_contain_text("psst, just between us")
    say(bob, "got it")
    expect(pane(alice)).to_contain_text("got it")

    # leaving: alice sees bob leave and drops him from the member list
    bob.locator("#toggle-sidebar").click()
    bob.locator("#joined button", has_text="random").click()
    bob.locator("#leave-button").click()
    expect(bob.locator("#joined")).not_to_contain_text("random")
    alice.locator("#joined button", has_text="random").click()
    expect(pane(alice)).to_contain_text("bob left")
    expect(alice.locator("#members")).not_to_contain_text("bob")

    alice.locator("#joined button", has_text="general").click()
    expect(alice.locator(".stat[data-stat=users] .stat-value")).to_have_text("2")
    shot(alice, "chat-desktop")
    shot(bob, "chat-phone")


def test_statistics_panel_updates_and_follows_its_controls(pages: Pages) -> None:
    alice = pages.login("alice")
    users = alice.locator(".stat[data-stat=users] .stat-value")
    expect(users).to_have_text("1")
    messages = alice.locator(".stat[data-stat=messages] .stat-value")
    expect(messages).not_to_have_text("…")
    memory = alice.locator(".stat[data-stat=memory] .stat-value")
    expect(memory).to_contain_text("MiB")
    expect(alice.locator("#client-memory")).to_contain_text("JS heap")  # fired to the server

    bob = pages.login("bob")
    expect(users).to_have_text("2")  # pushed by the statistics channel, no reload
    before = int(messages.inner_text().replace(",", ""))
    say(bob, "counted")
    alice.wait_for_function(
        f"Number(document.querySelector('.stat[data-stat=messages] .stat-value')"
        f".textContent.replace(/,/g, '')) > {before}",
        timeout=WAIT_MS,
    )
    expect(alice.locator(".stat[data-stat=users] svg polyline")).to_have_count(1)

    # the controls change the ids and the period of the running interaction
    alice.locator("#stat-memory").uncheck()
    expect(alice.locator(".stat[data-stat=memory]")).to_have_count(0)
    alice.locator("#stat-memory").check()
    expect(memory).to_contain_text("MiB")
    alice.locator("#stats-period").select_option("0.5")
    bob.close()
    expect(users).to_have_text("1")
    shot(alice, "statistics")


def test_browser_and_python_client_talk(pages: Pages, server: tuple[Proxy, int]) -> None:
    py = Peer(server[1], "py")
    try:
        py.request("channel.join", {"channel": "general"})
        alice = pages.login("alice")
        expect(alice.locator("#members")).to_contain_text("py")

        py.say("general", "hello from python")
        expect(pane(alice)).to_contain_text("hello from python")
        say(alice, "hello from the browser")
        item = py.item(lambda i: i["kind"] == "message" and i["from"] == "alice")
        assert item["content"] == "hello from the browser"
        assert item["channel"] == "general"

        py.say(None, "a private word", user="alice")
        expect(alice.locator("#privates button", has_text="py").locator(".badge")).to_have_text("1")
        alice.locator("#privates button", has_text="py").click()
        expect(pane(alice)).to_contain_text("a private word")
        say(alice, "private answer")
        item = py.item(lambda i: i["kind"] == "message" and i["channel"] is None)
        assert (item["from"], item["to"], item["content"]) == ("alice", "py", "private answer")
    finally:
        py.close()


def test_cut_connection_recovers_missed_messages(pages: Pages, server: tuple[Proxy, int]) -> None:
    proxy, port = server
    py = Peer(port, "py")
    try:
        py.request("channel.join", {"channel": "general"})
        alice = pages.login("alice")
        expect(alice.locator("#members")).to_contain_text("py")
        py.say("general", "before the cut")
        expect(pane(alice)).to_contain_text("before the cut")

        proxy.hold()  # the reconnect will wait in the proxy until the messages are sent
        proxy.cut()
        py.item(lambda i: i["kind"] == "leave" and i["from"] == "alice")  # the server saw it
        expect(alice.locator("#status")).not_to_have_text("online")
        expect(alice.locator("#banner")).to_contain_text("Connection lost")
        expect(alice.locator("#composer-input")).to_be_disabled()
        for n in range(1, 4):
            py.say("general", f"missed {n}")
        py.say(None, "missed privately", user="alice")
        assert proxy.accepted.acquire(timeout=WAIT_MS), "the page did not try to reconnect"
        proxy.release()

        banner = alice.locator("#banner")
        expect(banner).to_contain_text("Reconnected — 4 missed messages recovered.")
        expect(alice.locator("#status")).to_have_text("online")
        for n in range(1, 4):
            expect(pane(alice)).to_contain_text(f"missed {n}")
        expect(alice.locator("#privates button", has_text="py").locator(".badge")).to_have_text("1")
        expect(pane(alice)).not_to_contain_text("You left")  # our own drop is not news
        expect(alice.locator("#members")).to_contain_text("alice (you)")
        shot(alice, "reconnected")

        say(alice, "back again")
        item = py.item(lambda i: i["kind"] == "message" and i["from"] == "alice")
        assert item["content"] == "back again"
    finally:
        py.close()


def test_server_restart_is_reported_honestly(browser: Browser) -> None:
    with twistd_server("--store", "memory") as (_, first_port):
        proxy = Proxy(first_port)
        opened = Pages(browser, proxy.port)
        try:
            alice = opened.login("alice")
            say(alice, "said before the restart")
            expect(pane(alice)).to_contain_text("said before the restart")
            with twistd_server("--store", "memory") as (_, second_port):
                proxy.upstream = second_port  # new connections go to the new server
                proxy.cut()
                expect(alice.locator("#banner")).to_contain_text("the server was restarted")
                expect(alice.locator("#status")).to_have_text("online")
                expect(alice.locator("#members")).to_contain_text("alice (you)")
                say(alice, "said after the restart")
                expect(pane(alice)).to_contain_text("said after the restart")
                shot(alice, "restarted")
            assert opened.errors == [], f"console errors: {opened.errors}"
        finally:
            opened.close()
            proxy.close()


def test_errors_are_shown_to_humans(pages: Pages, server: tuple[Proxy, int]) -> None:
    py = Peer(server[1], "carol")
    try:
        page = pages.open()
        page.locator("#username").fill("carol")
        page.locator("#username").press("Enter")
        error = page.locator("#login-error")
        expect(error).to_have_text("The name “carol” is already in use. Please choose another one.")
        expect(page.locator("#username")).to_have_attribute("aria-invalid", "true")
        shot(page, "username-taken")

        page.locator("#username").fill("not a name!")
        page.locator("#username").press("Enter")
        expect(error).to_contain_text("letters, digits")

        page.locator("#username").fill("dave")
        page.locator("#username").press("Enter")
        expect(page.locator("#status")).to_have_text("online")

        # a refused message: too long for the server; the text is given back
        say(page, "x" * 5000)
        expect(page.locator("#composer-error")).to_contain_text("Not sent:")
        expect(page.locator("#composer-input")).to_have_value("x" * 5000)
        page.locator("#composer-input").fill("")

        # a private message to someone who never logged in
        page.locator("#dm-name").fill("nobody")
        page.locator("#dm-name").press("Enter")
        say(page, "anyone there?")
        expect(page.locator("#composer-error")).to_have_text("Not sent: there is no user “nobody”.")
        shot(page, "message-refused")
    finally:
        py.close()
