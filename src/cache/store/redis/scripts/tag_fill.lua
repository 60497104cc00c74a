-- KEYS: the tag epoch, then tags. ARGV: the epoch read at arrival, the
-- tags' lifetime (ms). Returns the tags' generations (created if missing),
-- or nil when a tag was invalidated since arrival.
if get(KEYS[1]) ~= ARGV[1] then return false end
local out = {}
for i = 2, #KEYS do
  local g = get(KEYS[i])
  if not valid(g) then
    g = num(now())
    redis.call('SET', KEYS[i], g, 'PX', ARGV[2])
  else
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
  end
  out[#out + 1] = g
end
return out
