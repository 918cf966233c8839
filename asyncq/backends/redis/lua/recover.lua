local now = now_s()
local ids = redis.call('ZRANGEBYSCORE', K.active, '-inf', F(now), 'LIMIT', 0, tonumber(ARGV[1]))
local n, woke = 0, 0
for _, id in ipairs(ids) do
  local h = redis.call('HMGET', J(id), 'st', 'p', 'att', 'm', 'w', 'c', 'sa')
  if h[1] ~= 'active' then
    redis.call('ZREM', K.active, id)
  else
    local message = 'lease held by worker ' .. (h[5] or 'None')
      .. ' lapsed before the attempt finished'
    local err = '{"kind":"lost","message":' .. json_string(message)
      .. ',"attempt":' .. h[3] .. ',"at":' .. F(now) .. '}'
    unplace(id, 'active', h[2])
    if h[6] == '1' then
      finish(id, 'cancelled', h[2], now, with_error(id, err, {}))
    elseif tonumber(h[3]) < tonumber(h[4]) then
      redis.call('HSET', J(id), unpack(with_error(id, err, {'st', 'queued'})))
      place(id, 'queued', h[2], tonumber(h[7]))
      woke = woke + 1
    else
      finish(id, 'dead', h[2], now, with_error(id, err, {}))
    end
    n = n + 1
  end
end
flush()
wake(woke)
return n
