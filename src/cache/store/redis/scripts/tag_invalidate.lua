-- KEYS: a surrogate tag. ARGV: its lifetime (ms). Moves its generation on
-- (odd: an invalidation, see tag_fill.lua).
local g = valid(get(KEYS[1]))
redis.call('SET', KEYS[1], num(next_tag(g, 0, true)), 'PX', ARGV[1])
return 1
