-- Delete what retention says is old, at most ARGV[1] jobs (and as many
-- completed jobs looked at). ARGV[2..4]: seconds to keep completed (without
-- a result TTL), dead and cancelled jobs, '' for ever. ARGV[5]: completed
-- jobs with a TTL to step over, found by the previous call of the same
-- prune. ARGV[6]: that prune's now ('' on its first call, which reads TIME).
-- ARGV[7..9]: how many completed, dead and cancelled jobs the queue keeps at
-- most, '' for no cap.
-- Returns {now, skip, more (1: call again), ids deleted...}.
local batch = tonumber(ARGV[1])
local now = ARGV[6] == '' and now_s() or tonumber(ARGV[6])
local reply = {F(now), 0, 0}
-- A parent is kept while a child still waits for it (then it counts as deleted
-- here, so a batch moves on; a later prune deletes it).
local function child_waits(id)
  for _, c in ipairs(ids_of(redis.call('HGET', J(id), 'ch'))) do
    if redis.call('HGET', J(c), 'st') == 'waiting' then return true end
  end
  return false
end
local function gone(id, st)
  if child_waits(id) then return end
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
-- Count caps: beyond the newest N of a state, the oldest go (by finished_at,
-- then id), whatever their age. Deleting keeps ZCARD exact, so two prunes at
-- once (each script atomic) never go below the cap.
for i, st in ipairs({'completed', 'dead', 'cancelled'}) do
  local most = ARGV[6 + i]
  if most and most ~= '' and room() > 0 then
    local excess = redis.call('ZCARD', FIN(st)) - tonumber(most)
    if excess > 0 then
      local n = math.min(excess, room())
      for _, id in ipairs(redis.call('ZRANGE', FIN(st), 0, n - 1)) do gone(id, st) end
      if excess > n then reply[3] = 1 end
      -- The range's head moved: the next call looks at it from the start again.
      if st == 'completed' then skip = 0 end
    end
  end
end
if room() <= 0 then reply[3] = 1 end
reply[2] = skip
flush()
return reply
