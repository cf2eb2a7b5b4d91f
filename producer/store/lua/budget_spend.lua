-- KEYS: day counter, last-forced key, this spend's key (named by a fresh spend id).
-- ARGV: limit (-1: record only), now (ms), min interval (ms, 0: none), ttl (s), spends made
-- while Redis was away, their last (ms).
-- Returns {allowed 0/1, used today, last forced ms}. A spend runs once: a replay with the
-- same spend id (a retry after a lost reply) returns the first answer and spends nothing.
local done = redis.pcall('GET', KEYS[3])
if type(done) == 'string' then
  local a, u, l = string.match(done, '^(%d+)|(%d+)|(%d+)$')
  if a then return {tonumber(a), tonumber(u), tonumber(l)} end
end
local function answer(allowed, used, last)
  local text = string.format('%d|%.0f|%.0f', allowed, used, last)
  redis.call('SET', KEYS[3], text, 'EX', 600)
  return {allowed, used, last}
end
local pending = tonumber(ARGV[5])
if pending > 0 then redis.call('INCRBY', KEYS[1], pending) end
local used = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local last = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
local offline_last = tonumber(ARGV[6])
if offline_last > last then
  last = offline_last
  redis.call('SET', KEYS[2], ARGV[6], 'EX', ARGV[4])
end
local limit = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
local gap = tonumber(ARGV[3])
if limit >= 0 then
  if used >= limit then return answer(0, used, last) end
  if gap > 0 and math.abs(now - last) < gap then return answer(0, used, last) end
end
used = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
if gap > 0 then
  last = now
  redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[4])
end
return answer(1, used, last)
