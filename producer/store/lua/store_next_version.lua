-- KEYS: version key, token key. ARGV: floor (the caller's clock, ms), ceiling (ms).
-- Returns {version, repaired 0/1, the poisoned value or '', the stored token}: a version
-- above every one handed out or stored, never below the floor. A version key holding
-- garbage or a poisoned version is repaired (overwritten with the new version) and reported.
-- The stored token is what GET of the token key answers (nil when none, an error element
-- when the key is of another type), read in the same call: a refresh about to fetch takes
-- its snapshot and its fencing version in one round trip.
local floor = tonumber(ARGV[1])
local ceiling = tonumber(ARGV[2])
local raw = redis.pcall('GET', KEYS[1])
local last = 0
local poisoned = ''
if type(raw) == 'table' then  -- not a string (a wrong type): poisoned too
  poisoned = '(not a string)'
elseif raw then
  last = valid_version(tonumber(raw), ceiling)
  if not last then
    last = 0
    poisoned = raw
  end
end
local token = redis.pcall('GET', KEYS[2])
last = math.max(last, stored_version(token, ceiling))
local v = math.max(last + 1, floor)
if v > MAX_VERSION or v > ceiling then
  return redis.error_reply('no valid version left above ' .. version_text(last))
end
redis.call('SET', KEYS[1], version_text(v))
if poisoned ~= '' then return {version_text(v), 1, poisoned, token} end
return {version_text(v), 0, '', token}
