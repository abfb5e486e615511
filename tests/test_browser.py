"""The page at ``/`` in a real browser: Debian's Chromium driven by Playwright's sync API.

The server runs as ``twistd -n chat`` in a subprocess, behind a small TCP proxy owned by the
test, so a test can cut the browser's connection, swallow the server's answers, or point it at
a restarted server exactly when it wants. Every wait is an ``expect``/``wait_for`` with a
timeout (or a blocking receive with one); nothing sleeps. Screenshots go to ``test-artifacts/``
(with ``UPDATE_DOCS_SCREENSHOT=1``, the page with a few conversations also to
``docs/screenshot.png``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import websocket
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    ViewportSize,
    expect,
    sync_playwright,
)

from tests import helpers
from tests.helpers import twistd_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
WAIT_MS = 10_000
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 780}
SESSION_KEY = "chat-client.v1.session"  # localStorage: the browser's session
TAB_KEY = "chat-client.v1"  # sessionStorage: this tab's feed positions and unsent messages

pytestmark = pytest.mark.timeout(120)
expect.set_options(timeout=WAIT_MS)


class Proxy:
    """A TCP relay to the server: ``cut()`` drops every connection, ``hold()`` parks new ones
    (accepted but not relayed: the browser's WebSocket stays CONNECTING, without console
    errors) until ``release()``, ``blackhole()`` swallows from now on what the server sends on
    the WebSocket connections open now (the server gets the requests, the browser never the
    answers), and ``upstream`` can be pointed at another server."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.muted: set[socket.socket] = set()
        self.websockets: set[socket.socket] = set()  # server sides of WebSocket connections
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

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        first = True
        try:
            while data := source.recv(65536):
                if first and b"upgrade: websocket" in data.lower():
                    self.websockets.add(sink)  # a request from the browser: sink is the server
                first = False
                if source not in self.muted:
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

    def blackhole(self) -> None:
        with self.lock:
            self.muted.update(server for _, server in self.pairs if server in self.websockets)

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
        for i, kept in enumerate(self.frames):
            if match(kept):
                return self.frames.pop(i)
        while True:  # each recv times out after WAIT_MS
            frame: dict[str, Any] = json.loads(self.ws.recv())
            if match(frame):
                return frame
            self.frames.append(frame)

    def request(self, route: str, data: Any = None) -> dict[str, Any]:
        self.next_id += 1
        frame_id = self.next_id
        frame = {"type": "request", "id": frame_id, "route": route}
        if data is not None:
            frame["data"] = data
        self.ws.send(json.dumps(frame))
        return self.wait(lambda f: f.get("id") == frame_id)

    def collect(self, route: str, data: Any = None) -> list[dict[str, Any]]:
        """Every item of a finite stream (``history``, ``channel.users``, ...)."""
        self.next_id += 1
        frame_id = self.next_id
        frame = {"type": "stream", "id": frame_id, "route": route}
        if data is not None:
            frame["data"] = data
        self.ws.send(json.dumps(frame))
        items = []
        while (f := self.wait(lambda f: f.get("id") == frame_id))["type"] == "next":
            items.append(f["data"])
        assert f["type"] == "complete", f
        return items

    def item(self, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The next feed item matching ``match``."""
        frame = self.wait(lambda f: f.get("id") == 1 and f["type"] == "next" and match(f["data"]))
        data: dict[str, Any] = frame["data"]
        return data

    def skipped_items(self) -> list[dict[str, Any]]:
        """Feed items received while waiting for others."""
        return [f["data"] for f in self.frames if f.get("id") == 1 and f["type"] == "next"]

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
    """Opens pages in fresh browser contexts (or more tabs of one) and records their console
    errors. A context is one browser profile: its tabs share localStorage, as a user's do."""

    def __init__(self, browser: Browser, port: int) -> None:
        self.browser = browser
        self.url = f"http://127.0.0.1:{port}/"
        self.errors: list[str] = []
        self.contexts: list[BrowserContext] = []

    def open(self, viewport: ViewportSize = DESKTOP) -> Page:
        context = self.browser.new_context(viewport=viewport)
        self.contexts.append(context)
        return self._page(context)

    def _page(self, context: BrowserContext) -> Page:
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)

        def console(message: ConsoleMessage) -> None:
            if message.type == "error":
                self.errors.append(message.text)

        page.on("console", console)
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        page.goto(self.url)
        return page

    def tab(self, page: Page) -> Page:
        """Another tab of the browser ``page`` runs in."""
        return self._page(page.context)

    def login(self, username: str, viewport: ViewportSize = DESKTOP) -> Page:
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


def nav(page: Page, section: str, name: str) -> Any:
    """The sidebar entry of ``name`` in ``#joined`` or ``#privates``."""
    return page.locator(f"#{section} button", has_text=name)


def join(page: Page, channel: str) -> None:
    page.locator("#join-name").fill(channel)
    page.locator("#join-name").press("Enter")
    expect(page.locator("#pane-title")).to_have_text(f"# {channel}")


def open_private(page: Page, user: str) -> None:
    page.locator("#dm-name").fill(user)
    page.locator("#dm-name").press("Enter")
    expect(page.locator("#pane-title")).to_have_text(f"@ {user} (private)")


def sent_frames(page: Page) -> list[dict[str, Any]]:
    """Records every frame the page's WebSockets send from now on (also after a reload)."""
    frames: list[dict[str, Any]] = []

    def on_socket(ws: Any) -> None:
        ws.on("framesent", lambda payload: frames.append(json.loads(payload)))

    page.on("websocket", on_socket)
    return frames


def own_moves(items: list[dict[str, Any]], username: str) -> list[dict[str, Any]]:
    return [i for i in items if i.get("kind") in ("join", "leave") and i.get("from") == username]


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
    join(alice, "random")
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
    nav(bob, "joined", "general").click()
    expect(bob.locator("#pane-title")).to_have_text("# general")
    say(alice, "more randomness")
    expect(nav(bob, "joined", "random").locator(".badge")).to_have_text("1")

    # private conversation: alice opens it from the member list
    nav(alice, "joined", "general").click()
    alice.locator("#members button", has_text="bob").click()
    expect(alice.locator("#pane-title")).to_have_text("@ bob (private)")
    say(alice, "psst, just between us")
    expect(pane(alice)).to_contain_text("psst, just between us")
    expect(pane(alice).locator(".msg.pending")).to_have_count(0)
    expect(bob.locator("#total-unread")).to_have_text("2")
    bob.locator("#toggle-sidebar").click()
    nav(bob, "privates", "alice").click()
    expect(pane(bob)).to_contain_text("psst, just between us")
    say(bob, "got it")
    expect(pane(alice)).to_contain_text("got it")
    expect(pane(alice).locator(".msg")).to_have_count(2)  # our own copy is not shown twice

    # leaving: alice sees bob leave and drops him from the member list
    bob.locator("#toggle-sidebar").click()
    nav(bob, "joined", "random").click()
    bob.locator("#leave-button").click()
    expect(bob.locator("#joined")).not_to_contain_text("random")
    nav(alice, "joined", "random").click()
    expect(pane(alice)).to_contain_text("bob left")
    expect(alice.locator("#members")).not_to_contain_text("bob")

    nav(alice, "joined", "general").click()
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
    bob.locator("#logout").click()  # a closed tab would leave the session lingering
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
        assert item["client_id"]  # the page sends every message with one

        py.say(None, "a private word", user="alice")
        expect(nav(alice, "privates", "py").locator(".badge")).to_have_text("1")
        nav(alice, "privates", "py").click()
        expect(pane(alice)).to_contain_text("a private word")
        say(alice, "private answer")
        item = py.item(lambda i: i["channel"] is None and i.get("from") == "alice")
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
        py.frames.clear()

        proxy.hold()  # the reconnect will wait in the proxy until the messages are sent
        proxy.cut()
        expect(alice.locator("#status")).not_to_have_text("online")
        expect(alice.locator("#banner")).to_contain_text("Connection lost")
        # what is typed meanwhile is shown at once, and sent when the connection is back
        say(alice, "typed while offline")
        expect(pane(alice).locator(".msg.pending")).to_contain_text("sending…")
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
        expect(nav(alice, "privates", "py").locator(".badge")).to_have_text("1")
        expect(pane(alice)).not_to_contain_text("You left")  # the session lived on
        expect(alice.locator("#members")).to_contain_text("alice (you)")
        item = py.item(lambda i: i["kind"] == "message" and i["from"] == "alice")
        assert item["content"] == "typed while offline"
        expect(pane(alice).locator(".msg.pending")).to_have_count(0)
        expect(pane(alice).locator(".msg", has_text="typed while offline")).to_have_count(1)
        shot(alice, "reconnected")

        say(alice, "back again")
        item = py.item(lambda i: i["kind"] == "message" and i["from"] == "alice")
        assert item["content"] == "back again"
        assert own_moves(py.skipped_items(), "alice") == []  # nobody saw alice leave and rejoin
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
                expect(pane(alice).locator(".msg.pending")).to_have_count(0)
                shot(alice, "restarted")
            assert opened.errors == [], f"console errors: {opened.errors}"
        finally:
            opened.close()
            proxy.close()


def test_errors_are_shown_to_humans(pages: Pages, server: tuple[Proxy, int]) -> None:
    py = Peer(server[1], "carol")
    try:
        page = pages.open()
        # nothing was tried yet: no "offline" pill on the login screen
        expect(page.locator("#login-view")).to_be_visible()
        expect(page.locator("#status")).to_be_hidden()
        page.locator("#username").fill("carol")
        page.locator("#username").press("Enter")
        error = page.locator("#login-error")
        expect(error).to_have_text("The name “carol” is already in use. Please choose another one.")
        expect(page.locator("#username")).to_have_attribute("aria-invalid", "true")
        expect(page.locator("#status")).to_be_hidden()
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
        expect(pane(page).locator(".msg")).to_have_count(0)
        page.locator("#composer-input").fill("")

        # a private message to someone who never logged in
        open_private(page, "nobody")
        say(page, "anyone there?")
        expect(page.locator("#composer-error")).to_have_text("Not sent: there is no user “nobody”.")
        shot(page, "message-refused")
    finally:
        py.close()


# Sessions that follow a person: tabs, reloads, devices, logout (protocol 1.1)


def test_second_tab_attaches_to_the_session(pages: Pages, server: tuple[Proxy, int]) -> None:
    bob = Peer(server[1], "bob")
    try:
        bob.request("channel.join", {"channel": "general"})
        first = pages.login("alice")
        expect(first.locator("#members")).to_contain_text("bob")
        second = pages.tab(first)  # same browser: finds the session and attaches, no login form
        expect(second.locator("#status")).to_have_text("online")
        expect(second.locator("#me")).to_have_text("alice")
        expect(second.locator("#pane-title")).to_have_text("# general")
        expect(second.locator("#login-view")).to_be_hidden()

        # both tabs see a message, each once; the one sent from a tab is its own in the other
        say(first, "seen in both tabs")
        expect(pane(second).locator(".msg.own", has_text="seen in both tabs")).to_have_count(1)
        bob.say("general", "hello both")
        expect(pane(first)).to_contain_text("hello both")
        expect(pane(second)).to_contain_text("hello both")
        expect(pane(first).locator(".msg", has_text="seen in both tabs")).to_have_count(1)

        # a join in one tab shows in the other's sidebar; a message there reaches both
        join(first, "random")
        expect(nav(second, "joined", "random")).to_be_visible()
        nav(second, "joined", "random").click()
        say(second, "from the second tab")
        expect(pane(first)).to_contain_text("from the second tab")

        # a private message from one tab is in the other too (the sender's own copy)
        open_private(second, "bob")
        say(second, "psst from tab two")
        item = bob.item(lambda i: i["kind"] == "message" and i["channel"] is None)
        assert (item["from"], item["content"]) == ("alice", "psst from tab two")
        expect(nav(first, "privates", "bob")).to_be_visible()
        nav(first, "privates", "bob").click()
        expect(pane(first).locator(".msg", has_text="psst from tab two")).to_have_count(1)
        expect(nav(first, "privates", "bob").locator(".badge")).to_be_hidden()  # our own

        # a leave in one tab drops the channel in the other
        nav(first, "joined", "random").click()
        first.locator("#leave-button").click()
        expect(second.locator("#joined")).not_to_contain_text("random")

        # one session: one user, online, joined once, never refused
        users = bob.collect("channel.users", {"channel": "general"})
        assert {"username": "alice", "online": True} in users
        general = bob.collect("history", {"channel": "general"})
        assert [i["kind"] for i in own_moves(general, "alice")] == ["join"]
        expect(first.locator(".stat[data-stat=users] .stat-value")).to_have_text("2")
        expect(second.locator(".stat[data-stat=connections] .stat-value")).to_have_text("3")
    finally:
        bob.close()


def test_reload_resumes_without_leave_or_join(pages: Pages, server: tuple[Proxy, int]) -> None:
    py = Peer(server[1], "py")
    try:
        py.request("channel.join", {"channel": "general"})
        alice = pages.login("alice")
        say(alice, "before the reload")
        py.item(lambda i: i.get("content") == "before the reload")
        join(alice, "random")
        say(alice, "in random")
        expect(pane(alice).locator(".msg.pending")).to_have_count(0)
        py.say("general", "while alice looks elsewhere")
        expect(nav(alice, "joined", "general").locator(".badge")).to_have_text("1")
        py.frames.clear()

        frames = sent_frames(alice)
        alice.reload()
        expect(alice.locator("#status")).to_have_text("online")
        expect(alice.locator("#pane-title")).to_have_text("# random")  # where it was
        expect(pane(alice)).to_contain_text("in random")  # history up to its position
        expect(nav(alice, "joined", "general").locator(".badge")).to_have_text("1")  # the server's
        expect(alice.locator("#banner")).to_be_hidden()  # silent: no "Reconnected — 0 missed"
        login = next(f for f in frames if f.get("route") == "login")
        assert login["data"].get("resume"), login  # attached to its session
        feed = next(f for f in frames if f.get("route") == "messages")
        assert feed["data"]["since"]["random"] > 0, feed  # the feed resumes from its positions
        assert not [f for f in frames if f.get("route") == "channel.join"]

        nav(alice, "joined", "general").click()
        expect(nav(alice, "joined", "general").locator(".badge")).to_be_hidden()
        expect(pane(alice).locator(".msg", has_text="while alice looks elsewhere")).to_have_count(1)
        expect(pane(alice).locator(".msg", has_text="before the reload")).to_have_count(1)
        expect(pane(alice)).not_to_contain_text("You left")
        expect(pane(alice)).not_to_contain_text("You joined")

        say(alice, "after the reload")
        py.item(lambda i: i.get("content") == "after the reload")
        assert own_moves(py.skipped_items(), "alice") == []  # py saw no leave and no join
    finally:
        py.close()


def test_private_message_received_while_logged_out_is_shown_at_login(
    pages: Pages, server: tuple[Proxy, int]
) -> None:
    py = Peer(server[1], "py")
    try:
        dora = pages.login("dora")
        dora.locator("#logout").click()
        expect(dora.locator("#login-view")).to_be_visible()
        py.say(None, "while you were away", user="dora")

        phone = pages.login("dora", PHONE)  # another device
        expect(phone.locator("#total-unread")).to_have_text("1")
        phone.locator("#toggle-sidebar").click()
        entry = nav(phone, "privates", "py")
        expect(entry.locator(".badge")).to_have_text("1")
        entry.click()
        expect(pane(phone)).to_contain_text("while you were away")  # history with user
        expect(entry.locator(".badge")).to_be_hidden()
        say(phone, "thanks, read it")
        py.item(lambda i: i.get("content") == "thanks, read it")

        # the read position is the server's: a reload shows nothing unread
        phone.reload()
        expect(phone.locator("#status")).to_have_text("online")
        expect(phone.locator("#pane-title")).to_have_text("@ py (private)")
        expect(pane(phone).locator(".msg")).to_have_count(2)
        phone.locator("#logout").click()
        expect(phone.locator("#login-view")).to_be_visible()

        laptop = pages.login("dora")  # and on every device
        expect(nav(laptop, "privates", "py")).to_be_visible()
        expect(nav(laptop, "privates", "py").locator(".badge")).to_be_hidden()
        expect(laptop.locator("#total-unread")).to_be_hidden()
        nav(laptop, "privates", "py").click()
        expect(pane(laptop)).to_contain_text("while you were away")
        expect(pane(laptop)).to_contain_text("thanks, read it")
    finally:
        py.close()


def test_logout_frees_the_name(pages: Pages, server: tuple[Proxy, int]) -> None:
    py = Peer(server[1], "py")
    try:
        py.request("channel.join", {"channel": "general"})
        alice = pages.login("alice")
        other_tab = pages.tab(alice)
        expect(other_tab.locator("#status")).to_have_text("online")
        py.frames.clear()

        alice.locator("#logout").click()
        expect(alice.locator("#login-view")).to_be_visible()
        expect(other_tab.locator("#login-view")).to_be_visible()  # the browser logged out
        expect(other_tab.locator("#banner")).to_contain_text("logged out in another tab")
        leave = py.item(lambda i: i["kind"] == "leave")  # at once, not after the linger
        assert leave["from"] == "alice"
        assert alice.evaluate(f"localStorage.getItem('{SESSION_KEY}')") is None
        assert alice.evaluate(f"sessionStorage.getItem('{TAB_KEY}')") is None
        expect(alice.locator("#status")).to_be_hidden()

        elsewhere = pages.login("alice")  # the name is free: a new session
        assert elsewhere.evaluate("window.chatClient.resumed") is False
        expect(elsewhere.locator("#members")).to_contain_text("alice (you)")
        expect(alice.locator("#login-view")).to_be_visible()  # another browser: unaffected

        # logging in again in one tab logs the other tab of that browser in too
        alice.locator("#username").fill("ally")
        alice.locator("#username").press("Enter")
        expect(alice.locator("#me")).to_have_text("ally")
        expect(other_tab.locator("#me")).to_have_text("ally")
        expect(other_tab.locator("#status")).to_have_text("online")
    finally:
        py.close()


@pytest.mark.parametrize("cut", ["drop the socket", "kill -9 the server", "reload the page"])
def test_send_cut_before_its_answer_is_shown_and_stored_once(
    browser: Browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cut: str
) -> None:
    port = helpers.free_port()
    monkeypatch.setattr(helpers, "free_port", lambda: port)  # a restart listens on the same port
    store = ("--store", f"sqlite:{tmp_path / 'chat.db'}")
    with contextlib.ExitStack() as stack:
        proc, _ = stack.enter_context(twistd_server(*store))
        proxy = Proxy(port)
        stack.callback(proxy.close)
        opened = Pages(browser, proxy.port)
        stack.callback(opened.close)
        py = Peer(port, "py")
        stack.callback(py.close)
        py.request("channel.join", {"channel": "general"})
        alice = opened.login("alice")
        expect(alice.locator("#members")).to_contain_text("py")

        frames = sent_frames(alice)  # of the connections opened from now on
        proxy.blackhole()  # the server gets what the page sends; the page gets no answer
        say(alice, "exactly once")
        stored = py.item(lambda i: i.get("content") == "exactly once")
        assert stored["client_id"]
        expect(pane(alice).locator(".msg.pending")).to_contain_text("sending…")
        if cut == "drop the socket":
            proxy.cut()
        elif cut == "reload the page":
            alice.reload()  # the unanswered message is kept in sessionStorage, and sent again
        else:
            proxy.hold()  # reconnects wait in the proxy (no failed attempts in the console)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            stack.enter_context(twistd_server(*store))
            proxy.release()
        expect(pane(alice).locator(".msg.pending")).to_have_count(0, timeout=2 * WAIT_MS)
        expect(alice.locator("#status")).to_have_text("online")
        checker = Peer(port, "checker")
        stack.callback(checker.close)
        checker.request("channel.join", {"channel": "general"})
        checker.say("general", "after the recovery")  # delivered after anything older
        expect(pane(alice)).to_contain_text("after the recovery")
        expect(pane(alice).locator(".msg", has_text="exactly once")).to_have_count(1)
        expect(alice.locator("#banner")).not_to_contain_text("restarted")  # the store kept all
        history = checker.collect("history", {"channel": "general"})
        once = [i for i in history if i.get("content") == "exactly once"]
        assert [(i["seq"], i["client_id"]) for i in once] == [(stored["seq"], stored["client_id"])]
        # on the new connection (the frames of the old one were sent before `frames` began)
        # the message was sent again, with the same client_id
        sends = [f["data"] for f in frames if f.get("route") == "message"]
        assert [m["client_id"] for m in sends] == [stored["client_id"]], sends
        assert opened.errors == [], f"console errors: {opened.errors}"


@pytest.mark.docs_screenshot  # collected only with UPDATE_DOCS_SCREENSHOT=1 (tests/conftest.py)
def test_docs_screenshot(pages: Pages, server: tuple[Proxy, int]) -> None:
    """docs/screenshot.png: a few conversations, unread badges, a member who is away."""
    port = server[1]
    bob, carol = Peer(port, "bob"), Peer(port, "carol")
    try:
        for peer in (bob, carol):
            peer.request("channel.join", {"channel": "general"})
        bob.request("channel.join", {"channel": "dev"})
        alice = pages.login("alice")
        say(alice, "Morning all! The new release is out")
        bob.say("general", "Nice — does it include the backpressure fix?")
        expect(pane(alice)).to_contain_text("backpressure fix")
        say(alice, "Yes: slow clients are paced by TCP now, nothing is buffered per recipient.")
        carol.say("general", "I'll try it on the staging box this afternoon.")
        expect(pane(alice)).to_contain_text("staging box")
        open_private(alice, "carol")
        say(alice, "Lunch at 12:30?")
        carol.say(None, "Sure, see you there", user="alice")
        expect(pane(alice)).to_contain_text("see you there")
        join(alice, "ops")
        join(alice, "dev")
        nav(alice, "joined", "general").click()
        bob.say("dev", "CI is green again")
        bob.say("dev", "Merging the reconnect branch")
        bob.say(None, "Got a minute for a review?", user="alice")
        bob.say(None, "It's the session resume PR", user="alice")
        expect(nav(alice, "joined", "dev").locator(".badge")).to_have_text("2")
        expect(nav(alice, "privates", "bob").locator(".badge")).to_have_text("2")
        carol.close()  # her session lingers: a member who is away
        expect(alice.locator("#members .member.away")).to_have_count(1, timeout=2 * WAIT_MS)
        alice.screenshot(path=str(ROOT / "docs" / "screenshot.png"))
    finally:
        bob.close()
