"""The documentation says what the code does: the README's options table is generated from
the settings, and docs/protocol.md lists every close the server sends."""

from __future__ import annotations

from pathlib import Path

from chat.protocol.closes import CATALOGUE
from chat.settings import options_table

ROOT = Path(__file__).resolve().parent.parent


def test_the_readme_lists_every_option_as_the_settings_define_it() -> None:
    readme = (ROOT / "README.md").read_text()
    assert options_table() in readme, "regenerate it: python -m chat.settings"


def test_the_protocol_document_lists_every_close_the_server_sends() -> None:
    document = (ROOT / "docs" / "protocol.md").read_text()
    for close in CATALOGUE:
        assert str(int(close.code)) in document, close
        assert close.reason in document, close


def test_every_transcript_in_the_protocol_document_is_what_the_server_sends() -> None:
    """docs/transcripts.py captures each transcript from real servers and compares it with
    docs/protocol.md (ignoring ts, ids and tokens); then runs the section 12 clients."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "transcripts.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 failed" in result.stdout, result.stdout[-4000:]
