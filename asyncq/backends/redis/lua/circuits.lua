-- The circuits of the queue (see "Circuit breakers" in the prelude); with
-- ARGV {name, '1' or '0'}, an operator opens or closes that one first.
if #ARGV == 2 then
  local key = CB(ARGV[1])
  redis.call('SADD', K.circuits, ARGV[1])
  if ARGV[2] == '1' then
    cb_open(key, now_s())
  else
    redis.call('HSET', key, 'st', 'closed', 'fl', '')
    redis.call('HDEL', key, 'pb', 'oa')
  end
end
local out = {}
for _, name in ipairs(redis.call('SMEMBERS', K.circuits)) do
  if #ARGV ~= 2 or name == ARGV[1] then
    out[#out + 1] = {name, redis.call('HGETALL', CB(name))}
  end
end
return out
