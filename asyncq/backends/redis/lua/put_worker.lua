-- KEYS: workers hash, seen zset, expires zset. ARGV: id, info, seconds to keep.
local now = now_s()
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], F(now), ARGV[1])
redis.call('ZADD', KEYS[3], F(now + tonumber(ARGV[3])), ARGV[1])
local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. F(now), 'LIMIT', 0, SLICE)
for _, id in ipairs(gone) do
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
end
return 1
