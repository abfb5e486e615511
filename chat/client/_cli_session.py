"""Where ``chat-client`` keeps a session between processes, so a killed one can be resumed.

A session outlives its connection for the server's linger time (2 minutes by default) and
holds its username meanwhile. A process that ends normally logs out, which frees the name at
once. A process that is killed (``kill -9``, a crash, a closed laptop) cannot; the next
``chat-client`` for the same user and server then finds the ``session_id`` in this file and
logs in with ``resume``: it attaches to the lingering session (channels kept, no leave/join
noise) instead of being refused with ``username_taken``.

The file is per server URL and username, under ``$XDG_STATE_HOME/chat-client/`` (else
``~/.local/state/chat-client/``), readable by its owner only (the ``session_id`` is a secret:
whoever holds it may act as the user while the session lives). ``--session-file PATH`` picks
another file, ``--no-session-file`` uses none. A clean logout removes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from chat.client.api import ChatClient

NAME = re.compile(r"[A-Za-z0-9_.-]{1,32}")


def state_directory() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return Path(base) / "chat-client"


@attrs.define
class Saved:
    session_id: str
    epoch: str | None


@attrs.define
class SessionFile:
    """One user's session on one server, kept in a small JSON file (or nowhere)."""

    path: Path | None
    url: str
    username: str

    @classmethod
    def choose(cls, url: str, username: str, path: str | None, disabled: bool) -> SessionFile:
        """The file for ``username`` at ``url``: ``path`` if given, none if ``disabled`` or
        the name is not a valid username (it could not have logged in, and must not steer a
        path)."""
        if disabled:
            return cls(None, url, username)
        if path is not None:
            return cls(Path(path), url, username)
        if NAME.fullmatch(username) is None:
            return cls(None, url, username)
        digest = hashlib.sha256(url.encode()).hexdigest()[:16]
        return cls(state_directory() / f"{username}-{digest}.json", url, username)

    def load(self) -> Saved | None:
        """The saved session, or None (no file, unreadable, or of another user or server)."""
        if self.path is None:
            return None
        try:
            data: Any = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        if (
            not isinstance(data, dict)
            or data.get("url") != self.url
            or data.get("username") != self.username
            or not isinstance(data.get("session_id"), str)
        ):
            return None
        epoch = data.get("epoch")
        return Saved(data["session_id"], epoch if isinstance(epoch, str) else None)

    def save(self, session_id: str, epoch: str | None) -> None:
        """Write atomically (a temporary file renamed), mode 0600; failures are not fatal."""
        if self.path is None:
            return
        record = {
            "url": self.url,
            "username": self.username,
            "session_id": session_id,
            "epoch": epoch,
        }
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, temporary = tempfile.mkstemp(prefix=".session-", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w") as out:
                    json.dump(record, out)
                os.replace(temporary, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                raise

    def forget(self, session_id: str | None) -> None:
        """Remove the file if it still names ``session_id`` (a logout ended our part of it)."""
        if self.path is None:
            return
        saved = self.load()
        if saved is not None and (session_id is None or saved.session_id == session_id):
            with contextlib.suppress(OSError):
                self.path.unlink()

    def follow(self, client: ChatClient) -> None:
        """Save ``client``'s session now; remove it from the file once that connection has
        logged out (a killed process never gets there, so its successor can resume)."""
        session_id = client.session_id
        if self.path is None or session_id is None:
            return
        self.save(session_id, client.epoch)

        def closed(result: Any) -> Any:
            if client.logged_out:
                self.forget(session_id)
            return result

        client.closed.addBoth(closed)
