local st, most = ARGV[1], tonumber(ARGV[2])
-- Waiting jobs have no index of their own: the caller walks the queue instead.
if st == 'waiting' then return false end
local sources = {}
if st == 'queued' then
  for _, prio in ipairs(redis.call('ZRANGE', K.prios, 0, -1)) do sources[#sources + 1] = R(prio) end
  -- queued jobs held back: set aside on a limit, or held until a time among
  -- the scheduled ones (the fetch keeps those whose state is queued)
  for _, slot in ipairs(redis.call('SMEMBERS', K.limits)) do sources[#sources + 1] = HELD(slot) end
  sources[#sources + 1] = K.delayed
elseif st == 'scheduled' or st == 'failed' then
  sources[1] = K.delayed
elseif st == 'active' then
  sources[1] = K.active
else
  sources[1] = FIN(st)
end
local size = 0
for _, key in ipairs(sources) do size = size + redis.call('ZCARD', key) end
if size > most then return false end
local out = {}
for _, key in ipairs(sources) do
  for _, id in ipairs(redis.call('ZRANGE', key, 0, -1)) do out[#out + 1] = id end
end
return out
