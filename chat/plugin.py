"""The ``twistd chat`` command line, generated from :class:`chat.settings.Settings`.

The drop-in ``twisted/plugins/chat_plugin.py`` only points here, so that Twisted's plugin scan
stays cheap and this code is imported only when ``twistd chat`` actually runs.

Every option comes from a field of :class:`~chat.settings.Settings` (its name, parser, default
and help), so adding an option is adding a field. A bad value ends ``twistd`` at once with one
line that names the option and what it allows (twistd's own handling of a usage error would
print the whole ``--help`` first); so do an endpoint that cannot be listened on and a store
that cannot be opened (:func:`makeService`).
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.python import usage

from chat.logs import JSON_OBSERVER
from chat.settings import Option, Settings, options


class OptionError(SystemExit):
    """One line on standard error and exit status 1 (twistd prints a SystemExit's text)."""

    def __init__(self, message: str) -> None:
        super().__init__(f"twistd chat: {message}")


def _coerce(spec: Option) -> Any:
    def coerce(text: str) -> Any:
        try:
            return spec.parse(text)
        except ValueError as exc:
            raise OptionError(f"--{spec.name} {text}: {exc}") from None

    coerce.coerceDoc = ""  # type: ignore[attr-defined]  # twistd would append it to the help
    return coerce


def _help(field: attrs.Attribute[Any], spec: Option) -> str:
    default = spec.default_text
    if default is None and not spec.repeatable and field.default not in (None, ""):
        default = str(field.default)
    return f"{spec.help} [default: {default}]" if default is not None else spec.help


def _parameters() -> list[list[Any]]:
    return [
        [spec.name, spec.short, None, _help(field, spec), _coerce(spec)]
        for field, spec in options()
        if not spec.repeatable
    ]


def _repeatable(field: attrs.Attribute[Any], spec: Option) -> Any:
    coerce = _coerce(spec)

    def add(self: Options, text: str) -> None:
        self.repeated.setdefault(field.name, []).append(coerce(text))

    add.__doc__ = _help(field, spec)
    return add


class Options(usage.Options):
    """Command-line options of ``twistd chat``."""

    synopsis = "[options]"
    longdesc = (
        "A real-time chat and pub/sub server speaking the JSON protocol chat.v1.json over "
        "WebSocket at /ws, with a browser page at /. Every outbound stream is paced by TCP "
        "backpressure: slow clients are neither disconnected nor buffered."
    )
    optParameters = _parameters()

    for _field, _spec in options():
        if _spec.repeatable:
            locals()["opt_" + _spec.name.replace("-", "_")] = _repeatable(_field, _spec)
    del _field, _spec

    def __init__(self) -> None:
        super().__init__()
        self.repeated: dict[str, list[Any]] = {}

    def parseOptions(self, options: Any = None) -> None:
        try:
            super().parseOptions(options)
        except usage.UsageError as exc:
            raise OptionError(f"{exc} (twistd chat --help lists the options)") from None

    def postOptions(self) -> None:
        try:
            settings = self.settings()
        except ValueError as exc:
            raise OptionError(str(exc)) from None
        if settings.auth == "token" and not settings.secret:
            raise OptionError(
                "--auth token needs --secret-file FILE: a file of the owner's alone (mode "
                "0600) holding the secret, at least 16 bytes, that signs login tokens"
            )
        if settings.log_format == "json" and self.parent is not None:
            self.parent["logger"] = JSON_OBSERVER  # twistd makes its log observer from this

    def settings(self) -> Settings:
        """The settings these options give (the defaults for every option not given)."""
        values: dict[str, Any] = {}
        for field, spec in options():
            if spec.repeatable:
                if field.name in self.repeated:
                    values[field.name] = tuple(self.repeated[field.name])
            elif self[spec.name] is not None:
                values[field.name] = self[spec.name]
        return Settings(**values)


def makeService(options: Options) -> Any:
    """The server, listening on its endpoints and over its opened store.

    twistd calls this before it writes its pid file or daemonizes, so an endpoint that cannot
    be listened on or a store that cannot be opened ends ``twistd`` here, on the terminal, with
    one line and exit status 1, having created nothing (see :mod:`chat.server`).
    """
    from chat.server import ListenError, make_service
    from chat.stores.errors import StoreOpenError

    try:
        return make_service(options.settings())
    except (ListenError, StoreOpenError) as exc:
        raise OptionError(str(exc)) from None
