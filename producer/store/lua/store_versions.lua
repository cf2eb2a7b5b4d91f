-- Shared by the store's functions (once, at the top of the wxtoken library): what counts as a version.
--
-- A version is an integer in [1, 2^53 - 1] (exact in Lua and in JSON doubles) and at most
-- ARGV ceiling: versions follow the writers' clocks in ms, so one far above every clock is
-- a poisoned value (a stray writer, a bug), never a real version. Anything else is nil.
local MAX_VERSION = 9007199254740991

local function valid_version(v, ceiling)
  if type(v) ~= 'number' or v ~= v or v < 1 or v > MAX_VERSION or v > ceiling then
    return nil
  end
  if v ~= math.floor(v) then return nil end
  return v
end

-- The version of the update stored as `raw` (plain or signed envelope); 0 for none, for
-- garbage and for a poisoned version, so a good writer may replace it.
local function stored_version(raw, ceiling)
  if type(raw) ~= 'string' then return 0 end
  local ok, doc = pcall(cjson.decode, raw)
  if not ok or type(doc) ~= 'table' then return 0 end
  if type(doc['payload']) == 'string' then  -- a signed envelope: the update is inside
    ok, doc = pcall(cjson.decode, doc['payload'])
    if not ok or type(doc) ~= 'table' then return 0 end
  end
  return valid_version(doc['version'], ceiling) or 0
end

local function version_text(v)
  return string.format('%.0f', v)
end
