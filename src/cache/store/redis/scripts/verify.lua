-- KEYS: the dataset's incarnation, its barrier. ARGV: the identity of the
-- server this connection reached (its run id and replication id), the
-- margin (µs) added to the server's clock when the barrier moves, `1` to
-- move it whatever the record says (a cluster primary that took over slots
-- from another: their keys came with that server's history).
-- Returns the barrier: entries stored before it are not to be trusted.
--
-- The incarnation names the server process and replication history that
-- last vouched for the dataset. Another one (a restart, which may have
-- loaded an older snapshot; a failover to a replica that had not received
-- every write; another node behind the same address) or none (a new or
-- flushed dataset, or the key evicted) may mean that invalidations were
-- lost: the barrier then moves past every entry stored so far.
--
-- The margin covers the clocks of two servers, so it is added only when
-- another server vouched before, or keys came from another server: a
-- dataset with no record (new, flushed; a cluster primary whose first slot
-- changed, which keeps its record there) has only entries stored by this
-- server's clock, if any (keys migrated from another primary come with a
-- forced move).
local b = valid(get(KEYS[2]))
local seen = get(KEYS[1])
local forced = ARGV[3] == '1'
if seen ~= ARGV[1] or not b or forced then
  local margin = 0
  if seen or forced then margin = tonumber(ARGV[2]) end
  b = math.max(b or 0, now() + margin)
  redis.call('SET', KEYS[2], num(b))
  redis.call('SET', KEYS[1], ARGV[1])
end
return num(b)
