-- KEYS: generation, entry, writes. ARGV: the generation read at arrival,
-- the entry, its time-to-live (ms), the generation's lifetime (ms).
if get(KEYS[1]) ~= ARGV[1] then return 0 end
local w = redis.pcall('SCARD', KEYS[3])
if type(w) ~= 'number' or w > 0 then return 0 end
-- The entry, after the server's clock: the time its variants' ages are
-- counted from (see codec.rs).
redis.call('SET', KEYS[2], num(now()) .. ':' .. ARGV[2], 'PX', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
