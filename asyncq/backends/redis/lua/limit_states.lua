-- Every limit counter of the queue (see "Flow control" in the prelude): per
-- slot, its name, its hash's fields (HGETALL) and how many jobs are set aside
-- on it. A keyed counter whose key expired (expire_idle) is gone: left out.
local out = {}
for _, slot in ipairs(redis.call('SMEMBERS', K.limits)) do
  local held = redis.call('ZCARD', HELD(slot))
  if held > 0 or redis.call('EXISTS', LIM(slot)) == 1 then
    out[#out + 1] = {slot, redis.call('HGETALL', LIM(slot)), held}
  end
end
return out
