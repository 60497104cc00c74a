-- KEYS: the tag epoch. Returns it, created if missing.
local e = get(KEYS[1])
if not valid(e) then
  e = num(now())
  redis.call('SET', KEYS[1], e)
end
return e
