-- KEYS: a surrogate tag. ARGV: the request's arrival less the margin (µs),
-- the barrier of this server (µs), the tag's lifetime (ms).
-- Returns the tag's generation, for the variant the fill stores; created
-- when missing, and moved on when older than the barrier (it may have
-- rolled back: it stays odd if it was, so that a slower request that
-- arrived before that invalidation is still refused); nil when the tag was
-- invalidated (an odd generation) after the request arrived: the response
-- may predate the invalidation.
local g = valid(get(KEYS[1]))
if g and g % 2 == 1 and g > tonumber(ARGV[1]) then return false end
if not g or g < tonumber(ARGV[2]) then
  g = next_tag(g, tonumber(ARGV[2]), g and g % 2 == 1)
  redis.call('SET', KEYS[1], num(g), 'PX', ARGV[3])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return num(g)
