"""The interfaces of the chat domain (after twisted.words' ``iwords``).

The service tells whoever delivers a session's items about its memberships through
:class:`IMembershipListener` (the ``messages`` feeds implement it), so the service imports no
producer, and a new kind of delivery is a new listener.
"""

from __future__ import annotations

from zope.interface import Interface


class IMembershipListener(Interface):
    """Told when its session's membership of a channel begins and ends, in log order."""

    def joined(channel: str, join_seq: int) -> None:
        """The session's join item of ``channel`` is stored with seq ``join_seq``."""

    def left(channel: str, leave_seq: int) -> None:
        """The session's leave item of ``channel`` is stored with seq ``leave_seq``."""
