local now = now_s()
local out = {}
for _, id in ipairs(ARGV) do
  local h = redis.call('HMGET', J(id), 'st', 'p', 'k', 'n')
  -- A priority that is not one stays dead: it names no ready set.
  -- A job with a key_ttl may hold its key still: itself, which does not stop it.
  local holder = h[3] and key_holder(h[3], now)
  if h[1] == 'dead' and is_prio(h[2]) and not (holder and holder ~= id) then
    if h[3] then redis.call('HSET', K.keys, h[3], id) end
    unplace(id, 'dead', h[2])
    redis.call('HDEL', J(id), 'fin')
    redis.call('HSET', J(id), 'st', 'queued', 'att', 0, 'sa', F(now))
    place(id, 'queued', h[2], now)
    event('retried', id, h[4], F(now), 'by', 'operator')
    out[#out + 1] = id
  end
end
flush()
wake(#out)
return out
