-- KEYS: generation, entry. ARGV: the generation's lifetime (ms).
-- Returns the generation (created if missing or not a positive integer in
-- canonical form), the server time, the entry.
local g = get(KEYS[1])
local t = now()
if not valid(g) then
  g = num(t)
  redis.call('SET', KEYS[1], g, 'PX', ARGV[1])
end
return {g, num(t), get(KEYS[2])}
