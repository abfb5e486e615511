"""The Lua scripts of the Redis backend, each one atomic step on the shared state.

Redis runs one script at a time, so each of these is a step no other node can interleave
with: an append (seqs stay gapless, a private message lands in both inboxes or neither, and a
``client_id`` is recorded with its item), a username claim, a membership change, a read
position, the bridge leadership.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Final

from twisted.internet.defer import Deferred, gatherResults
from twisted.python.failure import Failure

from chat.stores.redis._resp import RedisConnection, RedisError, RespProtocol


class Script:
    """A Lua script run with EVALSHA, falling back to EVAL when Redis lost its script cache.

    Every connection loads the scripts first (:func:`load_scripts`), so the fallback is only
    for a ``SCRIPT FLUSH`` on a live connection: the EVAL is sent when the NOSCRIPT answer
    arrives, after the commands pipelined behind the EVALSHA.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def __call__(
        self, connection: RedisConnection, keys: Sequence[Any], args: Sequence[Any]
    ) -> Deferred[Any]:
        d = connection.execute("EVALSHA", self.sha, len(keys), *keys, *args)

        def no_script(failure: Failure) -> Any:
            if failure.check(RedisError) and str(failure.value).startswith("NOSCRIPT"):
                return connection.execute("EVAL", self.source, len(keys), *keys, *args)
            return failure

        return d.addErrback(no_script)


# KEYS: seq hash, ts hash, stream of the log, stream of the copy (or the same), dedup key or ''
# ARGV: log, item JSON without seq/ts, now (ms), retention, events channel, copy log or '',
#       dedup window (ms)
# Reply: {seq, ts, payload[, copy seq, copy payload]}, or {'d', 'seq ts'} for a duplicate.
# The dedup window is measured by the store's clock (``now``), as in the other stores; the key's
# expiry only collects records that can no longer match.
APPEND: Final = Script("""
local dedup = KEYS[5]
if dedup ~= '' then
  local earlier = redis.call('GET', dedup)
  if earlier then
    local earlier_ts = tonumber(string.match(earlier, ' (%d+)$'))
    if earlier_ts + tonumber(ARGV[7]) >= tonumber(ARGV[3]) then return {'d', earlier} end
  end
end
local ts = tonumber(ARGV[3])
local function later(log)
  local prev = tonumber(redis.call('HGET', KEYS[2], log) or '0')
  if prev > ts then ts = prev end
end
later(ARGV[1])
if ARGV[6] ~= '' then later(ARGV[6]) end
local tss = string.format('%d', ts)
local body = ARGV[2]
local function add(log, stream)
  local seqs = string.format('%d', redis.call('HINCRBY', KEYS[1], log, 1))
  redis.call('HSET', KEYS[2], log, tss)
  local tail = '"seq":' .. seqs .. ',"ts":' .. tss .. '}'
  local payload
  if body == '{}' then
    payload = '{' .. tail
  else
    payload = string.sub(body, 1, -2) .. ',' .. tail
  end
  redis.call('XADD', stream, 'MAXLEN', '~', ARGV[4], seqs .. '-0', 't', tss, 'p', payload)
  redis.call('PUBLISH', ARGV[5], 'i' .. log .. '\\n' .. seqs .. '\\n' .. tss .. '\\n' .. payload)
  return seqs, payload
end
local seq, payload = add(ARGV[1], KEYS[3])
local reply = {seq, tss, payload}
if ARGV[6] ~= '' then
  local copy_seq, copy_payload = add(ARGV[6], KEYS[4])
  reply[4] = copy_seq
  reply[5] = copy_payload
end
if dedup ~= '' then redis.call('SET', dedup, seq .. ' ' .. tss, 'PX', ARGV[7]) end
return reply
""")

# KEYS: the user's read positions hash; ARGV: log, seq. Reply: the position stored.
SAVE_READ: Final = Script("""
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local new = tonumber(ARGV[2])
if new > current then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return new
end
return current
""")

# KEYS: sessions hash, this node's users set; ARGV: username, "<node> <session id>",
# node-lease key prefix, events channel, node. Reply: 1 when claimed: the name is free, held
# by this very session (a node writing its sessions back after an outage), or held by a node
# whose lease expired. Another session of this node holds it for good, like any other.
CLAIM: Final = Script("""
local owner = redis.call('HGET', KEYS[1], ARGV[1])
if owner and owner ~= ARGV[2] then
  local node = string.match(owner, '^(%S+)')
  if node == ARGV[5] or redis.call('EXISTS', ARGV[3] .. node) == 1 then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[4], 'L' .. ARGV[1])
return 1
""")

# KEYS: sessions hash, the owner node's users set, online set; ARGV: username,
# "<node> <session id>" (or "<node> " for any session of that node), events channel.
RELEASE: Final = Script("""
local owner = redis.call('HGET', KEYS[1], ARGV[1])
if owner and (owner == ARGV[2] or string.match(owner, '^(%S+)') .. ' ' == ARGV[2]) then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('SREM', KEYS[3], ARGV[1])
  redis.call('PUBLISH', ARGV[3], 'O' .. ARGV[1])
end
redis.call('SREM', KEYS[2], ARGV[1])
return 1
""")

# KEYS: online set; ARGV: username, '1' or '0', events channel.
ONLINE: Final = Script("""
if ARGV[2] == '1' then
  redis.call('SADD', KEYS[1], ARGV[1])
else
  redis.call('SREM', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', ARGV[3], (ARGV[2] == '1' and 'N' or 'F') .. ARGV[1])
return 1
""")

# KEYS: the channel's members set, the node's memberships set; ARGV: username,
# "<channel>\\n<username>", events channel, 'J' (join) or 'P' (part).
MEMBER: Final = Script("""
local changed
if ARGV[4] == 'J' then
  changed = redis.call('SADD', KEYS[1], ARGV[1])
  redis.call('SADD', KEYS[2], ARGV[2])
else
  changed = redis.call('SREM', KEYS[1], ARGV[1])
  redis.call('SREM', KEYS[2], ARGV[2])
end
redis.call('PUBLISH', ARGV[3], ARGV[4] .. ARGV[2])
return changed
""")

# KEYS: the leader key; ARGV: node, lease (ms). Reply: 1 while this node leads.
LEADER: Final = Script("""
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
""")

SCRIPTS: Final = (APPEND, SAVE_READ, CLAIM, RELEASE, ONLINE, MEMBER, LEADER)


def load_scripts(protocol: RespProtocol) -> Deferred[Any]:
    """Load every script on a new connection before it carries commands.

    A Redis that restarted (or is new) has no scripts cached; an EVALSHA answered NOSCRIPT
    would be retried as EVAL only after the commands pipelined behind it ran, so a
    ``save_read`` then ``read_positions``, or a release then a claim, would run out of order.
    """
    return gatherResults(
        [protocol.execute("SCRIPT", "LOAD", script.source) for script in SCRIPTS],
        consumeErrors=True,
    )
