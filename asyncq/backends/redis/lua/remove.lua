-- Delete the jobs ARGV of this queue that are not active, as purge deletes
-- them (index, count, key, the id-ordered set, the hash with its result), and
-- tell their waiters: a bare id on the done channel, which makes them read
-- (and find no job). Replies, per id, the state it was in: '' when there is
-- no such job or its result expired; 'active' when it was left as it is.
local now = now_s()
local out = {}
for _, id in ipairs(ARGV) do
  local h = redis.call('HMGET', J(id), 'st', 'fin', 't', 'wt', 'n', 'ch')
  local st = h[1]
  if not st then
    out[#out + 1] = ''
  elseif st == 'active' then
    out[#out + 1] = st
  else
    if KNOWN[st] then
      delete_job(id, st)
    else
      -- A state no script wrote: out of every index it may be in. Its count
      -- stays where a script last put it (stats never shows such a state).
      redis.call('ZREM', K.delayed, id)
      for _, fin in ipairs({'completed', 'dead', 'cancelled'}) do
        redis.call('ZREM', FIN(fin), id)
      end
      redis.call('ZREM', K.expires, id)
      release_key(id)
      redis.call('ZREM', K.all, id)
      redis.call('DEL', J(id))
      st = 'dead'
    end
    if h[4] then redis.call('PUBLISH', K.done, id) end
    -- A removed parent counts as finished for the children that wait for it.
    if h[6] then release(h[6], now) end
    event('removed', id, h[5], F(now), 'by', 'operator')
    if expired(st, h[2], h[3], now) then out[#out + 1] = '' else out[#out + 1] = st end
  end
end
flush()
return out
