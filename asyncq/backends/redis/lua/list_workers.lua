-- KEYS: workers hash, seen zset, expires zset. Reply: 3 per worker: id, info, last_seen.
local now = now_s()
local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. F(now), 'LIMIT', 0, SLICE)
for _, id in ipairs(gone) do
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
end
local out = {}
local seen = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
for i = 1, #seen, 2 do
  local info = redis.call('HGET', KEYS[1], seen[i])
  if info then
    out[#out + 1] = seen[i]
    out[#out + 1] = info
    out[#out + 1] = seen[i + 1]
  end
end
return out
