-- KEYS: generation, writes. ARGV: the generation's lifetime (ms), the
-- write's id, how long the write may hold fills off (ms).
bump(KEYS[1], ARGV[1])
if type(redis.pcall('SADD', KEYS[2], ARGV[2])) ~= 'number' then
  redis.call('DEL', KEYS[2])
  redis.call('SADD', KEYS[2], ARGV[2])
end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
