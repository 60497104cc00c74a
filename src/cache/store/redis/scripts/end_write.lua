-- KEYS: generation, writes, then other generations to invalidate. ARGV:
-- the generations' lifetime (ms), the write's id, `1` to invalidate.
if ARGV[3] == '1' then
  for i = 1, #KEYS do
    if i ~= 2 then bump(KEYS[i], ARGV[1]) end
  end
end
redis.pcall('SREM', KEYS[2], ARGV[2])
return 1
