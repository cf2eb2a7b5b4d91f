-- KEYS: lease, epoch counter. ARGV: owner, ttl (ms), the longest TTL any producer sets (ms).
-- Returns {1, epoch} when we hold it (taken or renewed), {0, holder} when another producer
-- holds it, {3, value} when the lease is broken: not "{epoch}|{owner}", of another type,
-- without an expiry or with one no producer sets. A broken lease is given our TTL, so it
-- runs out within one TTL and the next tick takes it.
local ttl_ms = tonumber(ARGV[2])
local cur = redis.pcall('GET', KEYS[1])
if type(cur) == 'table' or cur then
  local epoch, holder
  if type(cur) == 'string' then epoch, holder = string.match(cur, '^(%d+)|(.+)$') end
  if epoch and holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {1, epoch}
  end
  local left = redis.call('PTTL', KEYS[1])
  if not epoch or left < 0 or left > tonumber(ARGV[3]) then
    if left < 0 or left > ttl_ms then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
    if type(cur) ~= 'string' then cur = '(not a string)' end
    return {3, cur}
  end
  return {0, cur}
end
local epoch = tonumber(redis.pcall('GET', KEYS[2]))
if not epoch or epoch < 0 or epoch >= 9007199254740991 or epoch ~= math.floor(epoch) then
  epoch = 0  -- a counter holding garbage starts again: epochs are informative, owners fence
end
local text = string.format('%.0f', epoch + 1)
redis.call('SET', KEYS[2], text)
redis.call('SET', KEYS[1], text .. '|' .. ARGV[1], 'PX', ARGV[2])
return {1, text}
