-- Delete what retention says is old, at most ARGV[1] jobs (and as many
-- completed jobs looked at). ARGV[2..4]: seconds to keep completed (without
-- a result TTL), dead and cancelled jobs, '' for ever. ARGV[5]: completed
-- jobs with a TTL to step over, found by the previous call of the same
-- prune. ARGV[6]: that prune's now ('' on its first call, which reads TIME).
-- Returns {now, skip, more (1: call again), ids deleted...}.
local batch = tonumber(ARGV[1])
local now = ARGV[6] == '' and now_s() or tonumber(ARGV[6])
local reply = {F(now), 0, 0}
local function gone(id, st)
  delete_job(id, st)
  reply[#reply + 1] = id
end
local function room() return batch - (#reply - 3) end
local function before(keep) return '(' .. F(now - tonumber(keep)) end

-- Results whose TTL passed: a job's own result_ttl decides for it.
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K.expires, '-inf', F(now), 'LIMIT', 0, batch)) do
  gone(id, 'completed')
end
-- Dead and cancelled jobs: every one that finished before its retention.
for i, st in ipairs({'dead', 'cancelled'}) do
  local keep = ARGV[2 + i]
  if keep ~= '' and room() > 0 then
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', FIN(st), '-inf', before(keep),
                                   'LIMIT', 0, room())) do
      gone(id, st)
    end
  end
end
-- Completed jobs share one index with and without a TTL: those with one that
-- has not passed stay (they lead the range, so the next call steps over them).
local skip = tonumber(ARGV[5])
if ARGV[2] ~= '' and room() > 0 then
  local look = room()
  local ids = redis.call('ZRANGEBYSCORE', FIN('completed'), '-inf', before(ARGV[2]),
                         'LIMIT', skip, look)
  for _, id in ipairs(ids) do
    local h = redis.call('HMGET', J(id), 't', 'fin')
    -- A TTL that is not a number counts as none.
    if num(h[1]) and not expired('completed', h[2], h[1], now) then
      skip = skip + 1
    else
      gone(id, 'completed')
    end
  end
  if #ids >= look then reply[3] = 1 end
end
if room() <= 0 then reply[3] = 1 end
reply[2] = skip
flush()
return reply
