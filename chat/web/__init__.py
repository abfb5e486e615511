"""The ``twisted.web`` site: the browser page at ``/`` and the WebSocket at ``/ws``."""
