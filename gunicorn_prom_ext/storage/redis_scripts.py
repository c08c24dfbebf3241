"""The Lua scripts the pusher and the sidecar run in Redis: each read or write in one round trip.

Scripts run atomically, on Redis's own clock (TIME), never a host's: a host whose clock runs
ahead would otherwise drop the other hosts' live instances from the index. Each script
checks the type of the keys it touches first: a key of the wrong type under the prefix
(someone else's, or a mistake) is reported, never an error that reads like an outage.
"""

from __future__ import annotations

# KEYS: snapshot, index. ARGV: snapshot, retention in ms, instance id, epoch, seq, owner.
# Returns the Redis time (ms) of an accepted push, else why it was refused:
#   {'wrongtype', key number, its type}: nothing was written;
#   {'stale', epoch, seq, owner, pttl}: the snapshot in place is newer, or, pushed in the
#     same epoch, another master's. A push that timed out on our side may still run later
#     (Redis was frozen, say), so counters never go backwards while listed; and of two
#     masters pushing under one id, the later started wins instead of both taking turns.
PUSH_SCRIPT = r"""
for i = 1, 2 do
  local kind = redis.call('TYPE', KEYS[i])['ok']
  if kind ~= 'none' and kind ~= ({'string', 'zset'})[i] then
    return {'wrongtype', i, kind}
  end
end
local old = redis.call('GET', KEYS[1])
if old then
  local epoch, seq = string.match(old, '^{"v":%d+,"epoch":(%d+),"seq":(%d+),')
  if epoch then
    local owner = string.match(old, '^{"v":%d+,"epoch":%d+,"seq":%d+,"owner":"([^"\\]*)",')
    owner = owner or ''
    local e, s = tonumber(epoch), tonumber(seq)
    local new_e, new_s = tonumber(ARGV[4]), tonumber(ARGV[5])
    if e > new_e or (e == new_e and ((owner ~= '' and owner ~= ARGV[6]) or s > new_s)) then
      return {'stale', epoch, seq, owner, redis.call('PTTL', KEYS[1])}
    end
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local retention = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', retention)
redis.call('ZADD', KEYS[2], now + retention, ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. now)
if redis.call('PTTL', KEYS[2]) < retention then
  redis.call('PEXPIRE', KEYS[2], retention)
end
return now
"""

# KEYS: index. ARGV: the most ids to return. Returns {the index key's type, the ids listed
# now, soonest to expire first (none unless a zset), how many are listed}.
LIVE_SCRIPT = """
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'zset' then
  return {kind, {}, 0}
end
local t = redis.call('TIME')
local now = '(' .. (tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf', 'LIMIT', 0, tonumber(ARGV[1]))
return {kind, ids, redis.call('ZCOUNT', KEYS[1], now, '+inf')}
"""

# KEYS: index, then instance keys. ARGV: the largest snapshot to read (bytes), then the ids.
# Returns, per instance, its snapshot; nil if it expired since it was listed; else why not:
#   {'size', bytes}: too large to read (it stays in Redis, unread);
#   {'type', type}: the key is not a string;
#   {'missing'}: still listed for a while yet gone (evicted under maxmemory, or deleted).
READ_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local indexed = redis.call('TYPE', KEYS[1])['ok'] == 'zset'
local limit = tonumber(ARGV[1])
local out = {}
for i = 2, #KEYS do
  local kind = redis.call('TYPE', KEYS[i])['ok']
  if kind == 'string' then
    local size = redis.call('STRLEN', KEYS[i])
    if size > limit then
      out[i - 1] = {'size', size}
    else
      out[i - 1] = redis.call('GET', KEYS[i])
    end
  elseif kind == 'none' then
    local score = indexed and redis.call('ZSCORE', KEYS[1], ARGV[i])
    -- A key expires a moment before its listing does: only a second's margin is a fault.
    if score and tonumber(score) > now + 1000 then
      out[i - 1] = {'missing'}
    else
      out[i - 1] = false
    end
  else
    out[i - 1] = {'type', kind}
  end
end
return out
"""
