"""Routes per interaction model, registered with decorators (after rsocket-py's router).

::

    router = Router()

    @router.request("channel.join")
    def join(ctx, data): ...            # -> JSON or Deferred[JSON]: the response

    @router.stream("history", after_writes=True)
    def history(ctx, interaction, data): ...   # -> a StreamProducer

    @router.fire("statistics")
    def statistics(ctx, data): ...      # -> None

``ctx`` is the connection's :class:`~chat.service.context.RouteContext`. A route registered
with ``after_writes`` reads what earlier requests of the same connection wrote: it runs only
once their writes are done (PROTOCOL.md: each request sees the effects of every earlier one).
A route used with another interaction model than it was registered for is unknown, and the
error message says which models it does take.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import attrs

from chat.protocol.interactions import Kind

FIRE = "fire"
H = TypeVar("H", bound=Callable[..., Any])


@attrs.frozen
class Route:
    model: str  # a Kind value, or "fire"
    name: str
    handler: Callable[..., Any]
    login: bool
    after_writes: bool


class Router:
    """The table of (interaction model, route name) -> handler."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Route] = {}

    def _register(self, model: str, name: str, login: bool, after_writes: bool) -> Callable[[H], H]:
        def register(handler: H) -> H:
            self.routes[(model, name)] = Route(model, name, handler, login, after_writes)
            return handler

        return register

    def request(
        self, name: str, *, login: bool = True, after_writes: bool = False
    ) -> Callable[[H], H]:
        return self._register(Kind.REQUEST, name, login, after_writes)

    def stream(
        self, name: str, *, login: bool = True, after_writes: bool = False
    ) -> Callable[[H], H]:
        return self._register(Kind.STREAM, name, login, after_writes)

    def channel(self, name: str, *, login: bool = True) -> Callable[[H], H]:
        return self._register(Kind.CHANNEL, name, login, False)

    def fire(self, name: str, *, login: bool = True) -> Callable[[H], H]:
        return self._register(FIRE, name, login, False)

    def find(self, model: str, name: str) -> Route | None:
        return self.routes.get((model, name))

    def unknown_message(self, model: str, name: str) -> str:
        models = sorted(m for (m, n) in self.routes if n == name)
        if models:
            return f"route {name!r} is not a {model}; it takes: {', '.join(models)}"
        return f"no route {name!r}"
