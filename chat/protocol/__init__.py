"""The wire protocol (PROTOCOL.md v1) as pure code: no Twisted, no Autobahn, no sockets.

Feed text frames to :class:`~chat.protocol.interactions.Interactions.receive`, act on the events
it returns, and ask it for the bytes of every frame you send, so that its bookkeeping of open
interactions, credit and cancellation stays the single source of truth.
"""
