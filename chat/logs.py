"""Log output formats for ``twistd chat --log-format``.

``text`` is twistd's own format. ``json`` writes one JSON object per event to standard output
(twisted.logger's ``jsonFileLogObserver``: every event field, ``log_format`` included), for log
shippers; the plugin installs it as twistd's ``--logger``.
"""

from __future__ import annotations

import sys

from twisted.logger import ILogObserver, jsonFileLogObserver

JSON_OBSERVER = "chat.logs.json_observer"


def json_observer() -> ILogObserver:
    """One JSON object per line on standard output."""
    return jsonFileLogObserver(sys.stdout, recordSeparator="")
