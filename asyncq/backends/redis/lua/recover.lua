local now = now_s()
local ids = redis.call('ZRANGEBYSCORE', K.active, '-inf', F(now), 'LIMIT', 0, tonumber(ARGV[1]))
local n, woke = 0, 0
for _, id in ipairs(ids) do
  local h = redis.call('HMGET', J(id), 'st', 'p', 'att', 'm', 'w', 'c', 'sa', 'n', 'lim')
  if h[1] ~= 'active' and not (h[1] and not KNOWN[h[1]]) then
    redis.call('ZREM', K.active, id)
  else
    local message = 'lease held by worker ' .. (h[5] or 'None')
      .. ' lapsed before the attempt finished'
    local err = '{"kind":"lost","message":' .. json_string(message)
      .. ',"attempt":' .. attempt_of(h[3]) .. ',"at":' .. F(now) .. '}'
    local att, most, sa = num(h[3]), num(h[4]), num(h[7])
    unplace(id, 'active', h[2])
    if h[9] then ended(h[9], id, 'queued', '{"kind":"lost"}', now) end
    if h[1] ~= 'active' then
      spoil(id, h[2], now, unreadable_error(id, 'st', h[1], 'no such state', h[3], now))
    elseif h[6] == '1' then
      finish(id, 'cancelled', h[2], now, with_error(id, err, {}))
      event('cancelled', id, h[8], F(now), 'a', h[3], 'w', h[5] or '', 'e', err, 'by', 'recovery')
    elseif not (att and most) then
      local field, value = 'att', h[3]
      if att then field, value = 'm', h[4] end
      spoil(id, h[2], now, err .. ',' .. unreadable_error(id, field, value, 'not a number', h[3], now))
    elseif att < most and not (sa and is_prio(h[2])) then
      local field, value, why = 'sa', h[7], 'not a time'
      if sa then field, value, why = 'p', h[2], 'not a priority' end
      spoil(id, h[2], now, err .. ',' .. unreadable_error(id, field, value, why, h[3], now))
    elseif att < most then
      redis.call('HSET', J(id), unpack(with_error(id, err, {'st', 'queued'})))
      place(id, 'queued', h[2], sa)
      woke = woke + 1
      event('recovered', id, h[8], F(now), 'a', h[3], 'w', h[5] or '', 'e', err)
    else
      finish(id, 'dead', h[2], now, with_error(id, err, {}))
      event('dead', id, h[8], F(now), 'a', h[3], 'w', h[5] or '', 'e', err, 'by', 'recovery')
    end
    n = n + 1
  end
end
flush()
wake(woke)
return n
