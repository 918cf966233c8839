local id = ARGV[1]
local h = redis.call('HMGET', J(id), 'st', 'p', 'fin', 't', 'n')
if not h[1] then return false end
local now = now_s()
if expired(h[1], h[3], h[4], now) then return false end
if h[1] == 'active' then
  redis.call('HSET', J(id), 'c', '1')
  if ARGV[2] ~= '' then redis.call('PUBLISH', ARGV[2], id) end
elseif LIVE[h[1]] then
  unplace(id, h[1], h[2])
  finish(id, 'cancelled', h[2], now, {})
  event('cancelled', id, h[5], F(now), 'by', ARGV[3] or 'api')
  flush()
end
return redis.call('HGETALL', J(id))
