"""The twistd plugin as users run it: options, start, serve, stop; the wheel's layout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

import pytest

from tests.helpers import server_log, twistd_path, twistd_server

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT.parent / "shared" / "tools" / "contract_smoke.py"


def run_twistd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [twistd_path(), "-n", "--pidfile=", "chat", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_help_documents_the_options() -> None:
    result = run_twistd("--help")
    assert result.returncode == 0
    for option in [
        "--listen=",
        "--store=",
        "--max-frame-size=",
        "--max-content-length=",
        "--retention=",
        "--max-interactions=",
    ]:
        assert option in result.stdout


def test_unknown_store_is_a_clear_usage_error() -> None:
    result = run_twistd("--store", "floppy")
    assert result.returncode != 0
    assert "--store floppy: unknown store" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_sigterm_stops_the_server_cleanly(tmp_path: Path) -> None:
    with twistd_server(cwd=str(tmp_path)) as (proc, port):  # the default store: sqlite:chat.db
        # A served page shows the reactor runs (and so has its signal handlers).
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as page:
            assert page.status == 200
        os.killpg(proc.pid, signal.SIGTERM)
        # Twisted re-raises the signal after a clean shutdown, so the status is -SIGTERM.
        assert proc.wait(10) in (0, -signal.SIGTERM)
        log = server_log(proc)
        assert "Server Shut Down." in log
        assert "Traceback" not in log


def test_several_listen_endpoints(tmp_path: Path) -> None:
    from tests.helpers import free_port

    extra = free_port()
    listen = ("--listen", f"tcp:{extra}:interface=127.0.0.1")
    with twistd_server(*listen, cwd=str(tmp_path)) as (_proc, port):
        import socket

        for p in (port, extra):
            socket.create_connection(("127.0.0.1", p), timeout=5).close()


@pytest.mark.skipif(
    not SMOKE.exists(), reason="../shared/tools/contract_smoke.py not beside the repo"
)
def test_contract_smoke_tool_passes() -> None:
    """The contract tool starts the server itself (the memory store) and walks revision 1.1."""
    env = {**os.environ, "PATH": f"{Path(twistd_path()).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        [sys.executable, str(SMOKE), "--start", "--revision", "1.1"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("contract (revision 1.1):") and last.endswith(" 0 failed"), last


@pytest.mark.skipif(
    not SMOKE.exists(), reason="../shared/tools/contract_smoke.py not beside the repo"
)
@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_the_1_1_contract_walk_passes_on_the_durable_stores(store: str) -> None:
    from tests.peer import store_server

    with store_server(store) as url:
        result = subprocess.run(
            [sys.executable, str(SMOKE), "--revision", "1.1", url],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1].endswith(" 0 failed"), result.stdout


def test_wheel_installs_the_drop_in_into_twisted_plugins(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        timeout=120,
    )
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "twisted/plugins/chat_plugin.py" in names
    assert "twisted/plugins/__init__.py" not in names  # never shadow Twisted's own package
    assert "twisted/__init__.py" not in names
    assert "chat/web/static/index.html" in names


def test_sigterm_closes_clients_with_1001_and_keeps_what_was_acknowledged(
    tmp_path: Path,
) -> None:
    import json

    import websocket

    def request(ws: websocket.WebSocket, frame_id: int, route: str, data: object) -> dict:
        ws.send(json.dumps({"type": "request", "id": frame_id, "route": route, "data": data}))
        while True:
            frame = json.loads(ws.recv())
            if frame.get("id") == frame_id:
                return frame

    with twistd_server(cwd=str(tmp_path)) as (proc, port):
        url = f"ws://127.0.0.1:{port}/ws"
        clients = [websocket.create_connection(url, timeout=10) for _ in range(3)]
        for i, ws in enumerate(clients):
            request(ws, 1, "login", {"username": f"u{i}"})
            request(ws, 2, "channel.join", {"channel": "room"})
        ack = request(clients[0], 3, "message", {"channel": "room", "content": "kept"})
        assert ack["type"] == "response"
        os.killpg(proc.pid, signal.SIGTERM)
        for ws in clients:
            while True:  # read past any items until the close frame
                opcode, data = ws.recv_data(control_frame=True)
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    assert int.from_bytes(data[:2], "big") == 1001
                    break
        assert proc.wait(5) in (0, -signal.SIGTERM)  # exits within 5 s
        assert "Traceback" not in server_log(proc)
    with twistd_server(cwd=str(tmp_path)) as (_proc, port):
        ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws", timeout=10)
        request(ws, 1, "login", {"username": "reader"})
        ws.send(
            json.dumps({"type": "stream", "id": 2, "route": "history", "data": {"channel": "room"}})
        )
        items = []
        while True:
            frame = json.loads(ws.recv())
            if frame["type"] == "complete":
                break
            items.append(frame["data"])
        assert ack["data"]["seq"] in [i["seq"] for i in items if i.get("content") == "kept"]
        assert [i["kind"] for i in items].count("leave") == 3  # every session ended cleanly
        ws.close()


def test_healthz_and_json_logs(tmp_path: Path) -> None:
    import json

    with twistd_server("--log-format", "json", cwd=str(tmp_path)) as (proc, port):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as page:
            assert page.status == 200
            assert json.loads(page.read()) == {"status": "ok", "store": "sqlite:chat.db"}
        lines = [line for line in server_log(proc).splitlines() if line.strip()]
        events = [json.loads(line) for line in lines]
        assert events and all("log_namespace" in event for event in events)
