-- KEYS: token key, version key, known set, then the audit stream when ARGV[7] is a cap
-- above 0, then the lease only for a fenced write.
-- ARGV: json, version, ms left to expiry (on the writer's clock), member, fence owner,
-- ceiling (ms), the audit stream's cap (MAXLEN ~; absent or 0: no entry), then the audit
-- entry's field/value pairs. The expiry is relative (PX), never PXAT: Redis's clock is not
-- the writer's.
-- Returns {1} when written (and the entry added), {1, error} when written but the entry
-- could not be added, {3} when this very update is already stored (a replay of our own
-- write, e.g. a retry after a lost reply: its entry was added then), {0, stored json} when
-- a version at least as high is stored, {2} when fenced off: the writer named an owner that
-- does not hold the lease. A refused or fenced write adds no entry.
local cap = tonumber(ARGV[7] or '0') or 0
local lease_key = KEYS[cap > 0 and 5 or 4]
if lease_key then
  local lease = redis.pcall('GET', lease_key)
  if type(lease) ~= 'string' then return {2} end
  local sep = string.find(lease, '|', 1, true)
  if not sep or string.sub(lease, sep + 1) ~= ARGV[5] then return {2} end
end
local v = tonumber(ARGV[2])
local ceiling = tonumber(ARGV[6])
local raw = redis.pcall('GET', KEYS[1])
local stored = stored_version(raw, ceiling)
if stored == v and raw == ARGV[1] then return {3} end
if stored >= v then return {0, raw} end
if tonumber(ARGV[3]) > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
else
  redis.call('DEL', KEYS[1])  -- expired already: what a PXAT in the past did
end
redis.call('SADD', KEYS[3], ARGV[4])
local last = valid_version(tonumber(redis.pcall('GET', KEYS[2])), ceiling) or 0
if v > last then redis.call('SET', KEYS[2], ARGV[2]) end
if cap > 0 then
  -- pcall: an audit trail Redis refuses (a key of another type) must not undo the write.
  local added = redis.pcall(
    'XADD', KEYS[4], 'MAXLEN', '~', ARGV[7], '*', (table.unpack or unpack)(ARGV, 8)
  )
  if type(added) == 'table' and added.err then return {1, added.err} end
end
return {1}
