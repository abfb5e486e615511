"""Every route of PROTOCOL.md, as handlers on one :class:`Router`.

A handler validates its ``data`` (``invalid_data`` with a precise message), asks the
:class:`~chat.service.chat.ChatService` to act, and returns the response (requests) or the
stream producer that will deliver the items (streams and channels).
"""

from __future__ import annotations

import weakref
from functools import partial
from typing import TYPE_CHECKING, Any, Final

from chat.auth import TokenError, verify_token
from chat.producers.feed import INBOX_KEY, FeedStream
from chat.producers.listing import ListStream
from chat.producers.statistics import StatisticsOptions, StatisticsStream
from chat.producers.stream import StreamProducer
from chat.protocol.errors import ErrorCode, RouteError
from chat.protocol.frames import encode_json
from chat.protocol.interactions import Interaction
from chat.service import validation as v
from chat.service.chat import STATISTICS_FIELDS, Session
from chat.service.router import Router
from chat.stores.interface import channel_log, inbox_log

if TYPE_CHECKING:
    from chat.connection import ChatConnection

HISTORY_DEFAULT_LIMIT: Final = 100
HISTORY_MAX_LIMIT: Final = 1000
STATISTICS_DEFAULT = StatisticsOptions(ids=("users", "channels"), period=2.0)
PERIOD_MIN: Final = 0.1
PERIOD_MAX: Final = 3600.0

router = Router()
_logging_in: weakref.WeakSet[ChatConnection] = weakref.WeakSet()  # a claim is in flight


def _session(ctx: ChatConnection) -> Session:
    assert ctx.session is not None  # the router checked the login
    return ctx.session


@router.request("login", login=False)
def login(ctx: ChatConnection, data: object) -> Any:
    fields = v.obj(data, "login")
    if ctx.session is not None:
        raise v.invalid(f"this connection is already logged in as {ctx.session.username!r}")
    username = v.name(fields, "username")
    if ctx.settings.auth == "token":
        try:
            verify_token(ctx.settings.secret, fields.get("token"), username)
        except TokenError as exc:
            ctx.auth_failed()
            raise RouteError(ErrorCode.UNAUTHENTICATED, str(exc)) from None
    if ctx in _logging_in:
        raise v.invalid("this connection is already logging in")
    _logging_in.add(ctx)

    def claimed(_: object) -> dict[str, Any]:
        _logging_in.discard(ctx)
        if ctx.lost:  # the connection closed while the claim was in flight
            ctx.service.unclaim(username)
            raise RouteError(ErrorCode.INTERNAL, "the connection closed")
        session = ctx.login(username)
        return {"username": username, "session_id": session.session_id, "epoch": ctx.store.epoch}

    def failed(failure: Any) -> Any:
        _logging_in.discard(ctx)
        return failure

    return ctx.service.claim(username).addCallbacks(claimed, failed)


@router.request("message")
def message(ctx: ChatConnection, data: object) -> Any:
    ctx.spend_message_token()
    fields = v.obj(data, "message")
    to_channel = fields.get("channel") is not None
    to_user = fields.get("user") is not None
    if to_channel and to_user:
        raise v.invalid('give "channel" or "user", not both')
    if not (to_channel or to_user):
        raise v.invalid('missing field "channel" (a channel message) or "user" (a private one)')
    target = v.name(fields, "channel" if to_channel else "user")
    content = v.content(fields, ctx.settings.max_content_length)
    if to_channel:
        return ctx.service.post(_session(ctx), target, content)
    return ctx.service.send_private(_session(ctx), target, content)


@router.request("channel.join")
def channel_join(ctx: ChatConnection, data: object) -> Any:
    channel = v.name(v.obj(data, "channel.join"), "channel")
    session = _session(ctx)
    most = ctx.settings.max_channels_per_user
    if most and channel not in session.channels and len(session.channels) >= most:
        raise RouteError(
            ErrorCode.FORBIDDEN, f"at most {most} channels per user; leave one to join another"
        )
    return ctx.service.join(session, channel)


@router.request("channel.leave")
def channel_leave(ctx: ChatConnection, data: object) -> Any:
    channel = v.name(v.obj(data, "channel.leave"), "channel")
    return ctx.service.leave(_session(ctx), channel)


@router.stream("channels")
def channels(ctx: ChatConnection, interaction: Interaction, data: object) -> StreamProducer:
    count = ctx.service.member_count
    items = [encode_json({"channel": name, "users": count(name)}) for name in ctx.store.channels()]
    return ListStream(ctx.outbound, interaction, items)


@router.stream("channel.users")
def channel_users(ctx: ChatConnection, interaction: Interaction, data: object) -> StreamProducer:
    channel = v.name(v.obj(data, "channel.users"), "channel")
    items = [encode_json({"username": name}) for name in ctx.service.users_in(channel)]
    return ListStream(ctx.outbound, interaction, items)


@router.stream("messages")
def messages(ctx: ChatConnection, interaction: Interaction, data: object) -> StreamProducer:
    fields = v.obj(data, "messages", optional=True)
    since = _since(fields.get("since"))
    epoch = fields.get("epoch")
    if epoch is not None and not isinstance(epoch, str):
        raise v.invalid('"epoch" must be the string "login" answered')
    if epoch is not None and epoch != ctx.store.epoch:
        since = {}  # positions in another store's logs mean nothing here
    session = _session(ctx)
    feed = FeedStream(ctx.outbound, interaction, ctx.store, session.username, since)
    session.feeds.append(feed)
    feed.on_release = partial(_forget_feed, session, feed)
    for channel, join_seq in session.channels.items():
        feed.follow(channel, join_seq)
    return feed


def _forget_feed(session: Session, feed: FeedStream) -> None:
    if feed in session.feeds:  # logout may have let go of it already
        session.feeds.remove(feed)


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


@router.stream("history")
def history(ctx: ChatConnection, interaction: Interaction, data: object) -> StreamProducer:
    fields = v.obj(data, "history", optional=True)
    channel = fields.get("channel")
    if channel is not None:
        channel = v.name(fields, "channel")
    before = v.optional_int(fields, "before", 1)
    after = v.optional_int(fields, "after", 0)
    limit = v.optional_int(fields, "limit", 1, HISTORY_MAX_LIMIT) or HISTORY_DEFAULT_LIMIT
    log = channel_log(channel) if channel is not None else inbox_log(_session(ctx).username)
    stream = ListStream(ctx.outbound, interaction)
    ctx.store.history(log, before, after, limit).addCallbacks(
        lambda items: stream.supply([item.payload for item in items]),
        lambda failure: ctx.stream_failed(stream, failure),
    )
    return stream


@router.fire("statistics")
def statistics_report(ctx: ChatConnection, data: object) -> None:
    fields = v.obj(data, "statistics")
    memory = v.optional_int(fields, "memory_usage", 0)
    if memory is None:
        raise v.invalid('missing field "memory_usage"')
    _session(ctx).client_memory = memory


@router.channel("statistics")
def statistics(ctx: ChatConnection, interaction: Interaction, data: object) -> StreamProducer:
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
