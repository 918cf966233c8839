local now = now_s()
if redis.call('EXISTS', K.paused) == 0 then
  if redis.call('ZCARD', K.prios) > 0 then return {1, '', F(now)} end
  local first = redis.call('ZRANGE', K.delayed, 0, 0, 'WITHSCORES')
  if first[2] and tonumber(first[2]) <= now then return {1, first[2], F(now)} end
  redis.call('DEL', K.wake)
  if first[2] then return {0, first[2], F(now)} end
end
redis.call('DEL', K.wake)
return {0, '', F(now)}
