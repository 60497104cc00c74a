-- The shared part of every script: reading a value that may be missing or
-- of another type (written by hand), the server clock, and moving a
-- generation on.
local function get(key)
  local v = redis.pcall('GET', key)
  if type(v) == 'table' then return false end
  return v
end
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function num(n)
  return string.format('%.0f', n)
end
-- A positive integer in canonical form, below 2^53: past it, Lua's doubles
-- make g + 1 == g, and moving such a generation on would do nothing.
local function valid(v)
  local n = tonumber(v)
  if n and n >= 1 and n < 9007199254740992 and n == math.floor(n) and num(n) == v then
    return n
  end
  return false
end
local function bump(key, life)
  local g = valid(get(key)) or 0
  local n = math.max(g + 1, now())
  if life then
    redis.call('SET', key, num(n), 'PX', life)
  else
    redis.call('SET', key, num(n))
  end
end
-- A surrogate tag's next generation: past `g`, the server clock and
-- `floor`, odd when an invalidation makes it and even otherwise (a tag
-- created, or moved past a barrier), so that a fill can tell a tag
-- invalidated after its request arrived (see tag_fill.lua).
local function next_tag(g, floor, invalidated)
  local n = math.max((g or 0) + 1, now(), floor)
  if (n % 2 == 1) ~= invalidated then n = n + 1 end
  return n
end
