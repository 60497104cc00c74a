-- KEYS: generation, entry. ARGV: how long a generation created here lives
-- (ms): until a fill extends it, or a miss for a fill later than that.
-- Returns the generation (created if missing or not a positive integer in
-- canonical form), the server time, the entry.
local g = get(KEYS[1])
local t = now()
if not valid(g) then
  g = num(t)
  redis.call('SET', KEYS[1], g, 'PX', ARGV[1])
end
return {g, num(t), get(KEYS[2])}
