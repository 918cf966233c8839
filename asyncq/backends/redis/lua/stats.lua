promote(now_s())
flush()
local out = {}
local counts = redis.call('HMGET', K.n, unpack(ARGV))
for i = 1, #ARGV do out[i] = tonumber(counts[i]) or 0 end
out[#out + 1] = redis.call('EXISTS', K.paused)
local oldest = nil
for _, prio in ipairs(redis.call('ZRANGE', K.prios, 0, -1)) do
  local first = redis.call('ZRANGE', R(prio), 0, 0, 'WITHSCORES')
  if first[2] and (oldest == nil or tonumber(first[2]) < oldest) then
    oldest = tonumber(first[2])
  end
end
if oldest then out[#out + 1] = F(oldest) else out[#out + 1] = '' end
return out
