"""Routes per interaction model, registered with decorators (after rsocket-py's router).

::

    router = Router()

    @router.request("channel.join")
    def join(ctx, data): ...            # -> JSON or Deferred[JSON]: the response

    @router.stream("channels")
    def channels(ctx, interaction, data): ...   # -> a StreamProducer

    @router.fire("statistics", login=True)
    def statistics(ctx, data): ...      # -> None

A route used with another interaction model than it was registered for is unknown
(PROTOCOL.md), and the error message says which models it does take.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from chat.protocol.interactions import Interaction, Kind

if TYPE_CHECKING:
    from chat.connection import ChatConnection
    from chat.producers.stream import StreamProducer

FIRE = "fire"

RequestHandler = Callable[["ChatConnection", Any], Any]
StreamHandler = Callable[["ChatConnection", Interaction, Any], "StreamProducer"]
FireHandler = Callable[["ChatConnection", Any], None]
H = TypeVar("H", bound=Callable[..., Any])


@attrs.frozen
class Route:
    model: str  # a Kind value, or "fire"
    name: str
    handler: Callable[..., Any]
    login: bool


class Router:
    """The table of (interaction model, route name) -> handler."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Route] = {}

    def _register(self, model: str, name: str, login: bool) -> Callable[[H], H]:
        def register(handler: H) -> H:
            self.routes[(model, name)] = Route(model, name, handler, login)
            return handler

        return register

    def request(self, name: str, *, login: bool = True) -> Callable[[H], H]:
        return self._register(Kind.REQUEST, name, login)

    def stream(self, name: str, *, login: bool = True) -> Callable[[H], H]:
        return self._register(Kind.STREAM, name, login)

    def channel(self, name: str, *, login: bool = True) -> Callable[[H], H]:
        return self._register(Kind.CHANNEL, name, login)

    def fire(self, name: str, *, login: bool = True) -> Callable[[H], H]:
        return self._register(FIRE, name, login)

    def find(self, model: str, name: str) -> Route | None:
        return self.routes.get((model, name))

    def unknown_message(self, model: str, name: str) -> str:
        models = sorted(m for (m, n) in self.routes if n == name)
        if models:
            return f"route {name!r} is not a {model}; it takes: {', '.join(models)}"
        return f"no route {name!r}"
