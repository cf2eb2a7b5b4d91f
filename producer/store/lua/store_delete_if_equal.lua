-- KEYS: token key. ARGV: the exact value to delete. Deletes only if unchanged meanwhile.
if redis.pcall('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
