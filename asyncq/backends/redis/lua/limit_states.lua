-- Every limit counter of the queue (see "Flow control" in the prelude): per
-- slot, its name, its hash's fields (HGETALL) and how many jobs are set aside on it.
local out = {}
for _, slot in ipairs(redis.call('SMEMBERS', K.limits)) do
  out[#out + 1] = {slot, redis.call('HGETALL', LIM(slot)), redis.call('ZCARD', HELD(slot))}
end
return out
