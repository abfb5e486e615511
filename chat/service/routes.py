"""Every route of PROTOCOL.md, as handlers on one :class:`Router`.

A handler validates its ``data`` (``invalid_data`` with a precise message), charges the
connection's limits, asks the :class:`~chat.service.chat.ChatService` to act, and returns the
response (requests) or the stream producer that will deliver the items (streams and channels).
Requests that write mark it with ``ctx.track``; those whose decision needs I/O first hold the
connection's later frames with ``ctx.hold`` (see :mod:`chat.service.context`).
"""

from __future__ import annotations

from typing import Any, Final

from twisted.python.failure import Failure

from chat.auth import TokenError, verify_token
from chat.producers.feed import INBOX_KEY, FeedStream
from chat.producers.listing import ChannelsStream, ConversationsStream, HistoryStream, MembersStream
from chat.producers.statistics import StatisticsOptions, StatisticsStream
from chat.producers.stream import StreamProducer
from chat.protocol.closes import LOGIN_FAILURES
from chat.protocol.errors import ErrorCode, RouteError
from chat.protocol.interactions import Interaction
from chat.protocol.items import conversation_prefixes
from chat.service import validation as v
from chat.service.chat import STATISTICS_FIELDS
from chat.service.context import RouteContext
from chat.service.router import Router
from chat.service.session import LoginEvent, LoginState, Session
from chat.stores.interface import channel_log, history_bounds, inbox_log

HISTORY_DEFAULT_LIMIT: Final = 100
HISTORY_MAX_LIMIT: Final = 1000
STATISTICS_DEFAULT = StatisticsOptions(ids=("users", "channels"), period=2.0)
PERIOD_MIN: Final = 0.1
PERIOD_MAX: Final = 3600.0

router = Router()


def _session(ctx: RouteContext) -> Session:
    session = ctx.session
    assert session is not None  # the router checked the login
    return session


# Sessions


@router.request("login", login=False)
def login(ctx: RouteContext, data: object) -> Any:
    fields = v.obj(data, "login")
    state = ctx.login.state
    if state is LoginState.LOGGED_IN:
        assert ctx.session is not None
        raise v.invalid(f"this connection is already logged in as {ctx.session.username!r}")
    if state is not LoginState.ANONYMOUS:
        raise v.invalid("this connection is already logging in")
    username = v.name(fields, "username")
    resume = v.optional_str(fields, "resume")
    token_valid = False
    if ctx.settings.auth == "token":
        try:
            verify_token(ctx.settings.secret, fields.get("token"), username)
        except TokenError as exc:
            _login_failed(ctx)
            raise RouteError(ErrorCode.UNAUTHENTICATED, str(exc)) from None
        token_valid = True
    ctx.login.fire(LoginEvent.LOGIN)

    def logged_in(result: tuple[Session, bool]) -> dict[str, Any]:
        session, resumed = result
        if ctx.login.state is not LoginState.LOGGING_IN:  # closed meanwhile
            ctx.service.detach(ctx, session, logout=False)
            raise RouteError(ErrorCode.INTERNAL, "the connection closed during the login")
        ctx.login.fire(LoginEvent.LOGGED_IN, session)
        ctx.limits.auth_failures = 0  # "in a row": a login that worked starts the count again
        ctx.logged_in()
        return {
            "username": username,
            "session_id": session.session_id,
            "epoch": ctx.service.store.epoch,
            "resumed": resumed,
        }

    def failed(failure: Failure) -> Failure:
        if ctx.login.state is LoginState.LOGGING_IN:
            ctx.login.fire(LoginEvent.FAILED)
        return failure

    d = ctx.service.login(ctx, username, resume, token_valid, ctx.is_open)
    d.addCallbacks(logged_in, failed)
    ctx.hold(d)
    return d


def _login_failed(ctx: RouteContext) -> None:
    """A token login failed; too many close the connection once the error is sent."""
    limits = ctx.limits
    limits.auth_failures += 1
    if limits.auth_failures >= ctx.settings.max_auth_failures:
        ctx.close(LOGIN_FAILURES.because(f"{limits.auth_failures} in a row"))


@router.request("logout")
def logout(ctx: RouteContext, data: object) -> Any:
    v.nothing(data, "logout")
    session = _session(ctx)
    ctx.login.fire(LoginEvent.LOGOUT)
    for feed in list(ctx.feeds):
        feed.fail(ErrorCode.UNAUTHENTICATED, "this connection logged out")
    ctx.service.detach(ctx, session, logout=True)
    return {}


# Messages and channels


@router.request("message")
def message(ctx: RouteContext, data: object) -> Any:
    ctx.limits.message()
    fields = v.obj(data, "message")
    to_channel = fields.get("channel") is not None
    to_user = fields.get("user") is not None
    if to_channel and to_user:
        raise v.invalid('give "channel" or "user", not both')
    if not (to_channel or to_user):
        raise v.invalid('missing field "channel" (a channel message) or "user" (a private one)')
    target = v.name(fields, "channel" if to_channel else "user")
    content = v.content(fields, ctx.settings.max_content_length)
    client_id = v.client_id(fields)
    session = _session(ctx)
    service = ctx.service
    if to_channel:
        return ctx.track(service.post(session, target, content, client_id))
    lookup = service.private_recipient_known(target)
    if lookup is None:
        return ctx.track(service.send_private(session, target, content, client_id))
    # Another node may know the user: decide after asking, holding later frames meanwhile.
    sent = lookup.addCallback(
        lambda _: ctx.track(service.send_private(session, target, content, client_id))
    )
    ctx.hold(sent)
    return sent


@router.request("channel.join")
def channel_join(ctx: RouteContext, data: object) -> Any:
    channel = v.name(v.obj(data, "channel.join"), "channel")
    ctx.limits.membership()
    return ctx.track(ctx.service.join(_session(ctx), channel))


@router.request("channel.leave")
def channel_leave(ctx: RouteContext, data: object) -> Any:
    channel = v.name(v.obj(data, "channel.leave"), "channel")
    ctx.limits.membership()
    return ctx.track(ctx.service.leave(_session(ctx), channel))


@router.stream("channels")
def channels(ctx: RouteContext, interaction: Interaction, data: object) -> StreamProducer:
    service = ctx.service
    return ChannelsStream(ctx.outbound, interaction, service.store, service.presence)


@router.stream("channel.users")
def channel_users(ctx: RouteContext, interaction: Interaction, data: object) -> StreamProducer:
    channel = v.name(v.obj(data, "channel.users"), "channel")
    return MembersStream(ctx.outbound, interaction, ctx.service.presence, channel)


# The feed


@router.stream("messages")
def messages(ctx: RouteContext, interaction: Interaction, data: object) -> StreamProducer:
    fields = v.obj(data, "messages", optional=True)
    since = _since(fields.get("since"))
    epoch = fields.get("epoch")
    if epoch is not None and not isinstance(epoch, str):
        raise v.invalid('"epoch" must be the string "login" answered')
    store = ctx.service.store
    if epoch is not None and epoch != store.epoch:
        since = {}  # positions in another store's logs mean nothing here
    session = _session(ctx)
    feed = FeedStream(ctx.outbound, interaction, store, session.username, since)
    session.listeners.append(feed)
    ctx.feeds.append(feed)

    def forget() -> None:
        if feed in session.listeners:
            session.listeners.remove(feed)
        if feed in ctx.feeds:
            ctx.feeds.remove(feed)

    feed.on_release = forget
    for channel, membership in session.channels.items():
        if membership.seq:  # a join still being stored tells the feed when it is
            feed.joined(channel, membership.seq)
    return feed


def _since(value: object) -> dict[str, int]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise v.invalid('"since" must be an object of {channel or "@": seq}')
    for key, seq in value.items():
        if key != INBOX_KEY and not v.is_name(key):
            raise v.invalid(f'"since" keys must be channel names or "@", got {key!r:.40}')
        if not v.is_int(seq) or seq < 0:
            raise v.invalid(f'"since"[{key!r}] must be an integer of 0 or more, got {seq!r:.40}')
    return dict(value)


# History and read positions


@router.stream("history", after_writes=True)
def history(ctx: RouteContext, interaction: Interaction, data: object) -> StreamProducer:
    fields = v.obj(data, "history", optional=True)
    channel = v.name(fields, "channel") if fields.get("channel") is not None else None
    user = v.name(fields, "user") if fields.get("user") is not None else None
    if channel is not None and user is not None:
        raise v.invalid('"user" pages the private messages of one\'s inbox; give no "channel"')
    before = v.optional_int(fields, "before", 1)
    after = v.optional_int(fields, "after", 0)
    limit = v.optional_int(fields, "limit", 1, HISTORY_MAX_LIMIT) or HISTORY_DEFAULT_LIMIT
    username = _session(ctx).username
    log_key = channel_log(channel) if channel is not None else inbox_log(username)
    store = ctx.service.store
    first, last = store.first_seq(log_key), store.last_seq(log_key)
    match = None
    if user is None:
        bounds = history_bounds(first, last, before, after, limit)
    else:
        prefixes = conversation_prefixes(username, user)

        def match(payload: bytes) -> bool:
            return payload.startswith(prefixes)

        # every match in the range; the stream keeps the newest (or, after, oldest) ``limit``
        bounds = history_bounds(first, last, before, after, last + 1)
    return HistoryStream(
        ctx.outbound, interaction, store, log_key, bounds, limit, match, after is not None
    )


@router.request("read")
def read(ctx: RouteContext, data: object) -> Any:
    fields = v.obj(data, "read")
    if "channel" not in fields:
        raise v.invalid('missing field "channel" (a channel name, or null for the inbox)')
    channel = v.name(fields, "channel") if fields["channel"] is not None else None
    seq = v.optional_int(fields, "seq", 0)
    if seq is None:
        raise v.invalid('missing field "seq"')
    return ctx.track(ctx.service.read(_session(ctx), channel, seq))


@router.stream("conversations", after_writes=True)
def conversations(ctx: RouteContext, interaction: Interaction, data: object) -> StreamProducer:
    session = _session(ctx)
    service = ctx.service
    rows = service.conversations(session)
    positions = service.store.read_positions(session.username)
    return ConversationsStream(
        ctx.outbound, interaction, service.store, session.username, rows, positions
    )


# Statistics


@router.fire("statistics")
def statistics_report(ctx: RouteContext, data: object) -> None:
    fields = v.obj(data, "statistics")
    memory = v.optional_int(fields, "memory_usage", 0)
    if memory is None:
        raise v.invalid('missing field "memory_usage"')
    _session(ctx).client_memory = memory


@router.channel("statistics")
def statistics(ctx: RouteContext, interaction: Interaction, data: object) -> StreamProducer:
    options = _statistics_options(v.obj(data, "statistics", optional=True), STATISTICS_DEFAULT)
    return StatisticsStream(
        ctx.outbound, interaction, ctx.clock, ctx.service.statistics, options, _change
    )


def _change(data: object, current: StatisticsOptions) -> StatisticsOptions:
    fields = v.obj(data, "statistics")
    if fields.get("ids") is None and fields.get("period_seconds") is None:
        raise v.invalid('a change needs "ids" and/or "period_seconds"')
    return _statistics_options(fields, current)


def _statistics_options(fields: dict[str, Any], current: StatisticsOptions) -> StatisticsOptions:
    ids, period = current.ids, current.period
    if fields.get("ids") is not None:
        raw = fields["ids"]
        if not isinstance(raw, list) or not raw:
            raise v.invalid('"ids" must be a non-empty array of statistics ids')
        unknown = [i for i in raw if not isinstance(i, str) or i not in STATISTICS_FIELDS]
        if unknown:
            known = ", ".join(STATISTICS_FIELDS)
            raise v.invalid(f"unknown statistics id {unknown[0]!r:.40}; known ids: {known}")
        ids = tuple(dict.fromkeys(raw))
    if fields.get("period_seconds") is not None:
        raw = fields["period_seconds"]
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise v.invalid('"period_seconds" must be a number')
        if not PERIOD_MIN <= raw <= PERIOD_MAX:
            raise v.invalid(
                f'"period_seconds" must be from {PERIOD_MIN} to {PERIOD_MAX:g}, got {raw}'
            )
        period = float(raw)
    return StatisticsOptions(ids=ids, period=period)
