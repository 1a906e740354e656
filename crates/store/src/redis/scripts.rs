//! The Lua scripts the Redis store runs: each one round trip, on the keys of one Cluster slot.

/// Moves the session to the next generation if it is at ARGV[1], active at ARGV[2]; returns
/// `"rotated"` or `"stale"` followed by the hash's fields and values (nothing if it is gone).
/// The hash is read once: the reply is that read with the written fields patched in.
pub(super) const ROTATE: &str = r#"
local h = redis.call('HGETALL', KEYS[1])
if #h == 0 then return {} end
local at = {}
for i = 1, #h, 2 do at[h[i]] = i + 1 end
local function get(k) return at[k] and h[at[k]] end
if get('gen') ~= ARGV[1] or get('ended') or tonumber(get('expires')) <= tonumber(ARGV[2]) then
  table.insert(h, 1, 'stale')
  return h
end
local gen = string.format('%d', tonumber(ARGV[1]) + 1)
local expires = string.format('%.0f', math.min(tonumber(ARGV[3]), tonumber(get('abs'))))
redis.call('HSET', KEYS[1], 'gen', gen, 'last_used', ARGV[2], 'expires', expires)
redis.call('PEXPIREAT', KEYS[1], string.format('%.0f', tonumber(expires) + tonumber(ARGV[4])))
for k, v in pairs({gen = gen, last_used = ARGV[2], expires = expires}) do
  if at[k] then h[at[k]] = v else table.insert(h, k); table.insert(h, v) end
end
table.insert(h, 1, 'rotated')
return h
"#;

/// Ends the session at ARGV[1] unless it has ended (or, with ARGV[2] = '1', unless it is not
/// active); returns 1 if this call ended it. With a second key (the feed stream), also appends
/// the end to it, ARGV[4] being the session id.
pub(super) const END: &str = r#"
local s = redis.call('HMGET', KEYS[1], 'ended', 'expires')
if s[2] == false or s[1] then return 0 end
if ARGV[2] == '1' and tonumber(s[2]) <= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'ended', ARGV[1])
redis.call('PEXPIREAT', KEYS[1], string.format('%.0f', tonumber(ARGV[1]) + tonumber(ARGV[3])))
if KEYS[2] then redis.call('XADD', KEYS[2], '*', 'sid', ARGV[4], 'at', ARGV[1]) end
return 1
"#;

/// Writes a session's hash and its deadline together, so that no hash is ever left without
/// one: ARGV[1] is the deadline (ms), the rest field, value, field, value, ….
pub(super) const CREATE: &str = r#"
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
"#;

/// The start of the scripts on a user's index (KEYS[1]), ARGV[1] being the caller's time and
/// ARGV[2] [`KEEP_MS`]. `upgrade` turns an index that earlier versions wrote as a plain set
/// into a sorted set: its members did not record their absolute expiry, so each gets the
/// latest one among them (the set's deadline less the day it was kept for), an upper bound
/// (`+inf` when the set has no deadline). `tidy` drops the ids whose sessions cannot be active
/// any more (with a day's margin for clocks that disagree) and has the key expire a day after
/// the last of the others.
pub(super) const INDEX_PRELUDE: &str = r#"
local now, keep = tonumber(ARGV[1]), tonumber(ARGV[2])
local function upgrade()
  if redis.call('TYPE', KEYS[1]).ok ~= 'set' then return end
  local ids = redis.call('SMEMBERS', KEYS[1])
  local deadline = redis.call('PEXPIRETIME', KEYS[1])
  local score = '+inf'
  if deadline >= 0 then score = string.format('%.0f', deadline - keep) end
  redis.call('DEL', KEYS[1])
  for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], score, id) end
end
local function tidy()
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%.0f', now - keep))
  local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  local last = top[2] and tonumber(top[2])
  if last and last < math.huge then
    redis.call('PEXPIREAT', KEYS[1], string.format('%.0f', last + keep))
  end
end
upgrade()
"#;

/// Adds session ARGV[3] to the user's index with the score ARGV[4] (see [`INDEX_PRELUDE`]).
pub(super) const INDEX_ADD: &str = r#"
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
tidy()
"#;

/// The ids in the user's index whose sessions may be active at ARGV[1] (see [`INDEX_PRELUDE`]).
pub(super) const INDEX_READ: &str = r#"
tidy()
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf')
"#;

/// A token bucket for [`LimitStore`]: `KEYS[1]` the bucket; `ARGV` capacity, refill period in
/// ms, now in ms, and `take` or `give`. Returns 0 when taken or given, else the ms to wait.
/// The bucket expires once it would have refilled, so idle keys leave by themselves.
pub(super) const BUCKET: &str = r#"
local capacity = tonumber(ARGV[1])
local rate = capacity / tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 't', 'u')
local tokens = tonumber(state[1]) or capacity
local updated = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - updated) * rate)
local wait = 0
if ARGV[4] == 'take' then
  if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) / rate) end
else
  tokens = math.min(capacity, tokens + 1)
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'u', now)
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / rate) + 1000)
return wait
"#;
