-- KEYS: lease. ARGV: owner. Deletes the lease only if we hold it.
local cur = redis.pcall('GET', KEYS[1])
if type(cur) == 'string' then
  local sep = string.find(cur, '|', 1, true)
  if sep and string.sub(cur, sep + 1) == ARGV[1] then
    redis.call('DEL', KEYS[1])
    return 1
  end
end
return 0
