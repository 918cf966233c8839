local ARGV = batch_args()
local n, queue = tonumber(ARGV[1]), ARGV[2]
local now = now_s()
local out, queued, stored = {}, 0, 0
local ready, delayed, indexed, added = {}, {}, {}, {}
-- Outside a cluster the caller passes the id index and the queue registry as
-- KEYS[2..n] (KEYS[n] the registry), so one script call does the whole enqueue.
local inline = #KEYS > 1
local waited = string.find(ARGV[3], 'w', 1, true) ~= nil
-- Fresh ids (made by the producer just now) cannot be another queue's.
local fresh = string.find(ARGV[3], 'f', 1, true) ~= nil
if inline then redis.call('SADD', KEYS[#KEYS], queue) end
-- Ids known already (a caller-chosen id, or a call replayed after a lost reply)
-- answer with the job as stored. A batch asks for all of them at once and adds the new ones at the end.
local known = {}
if n > 1 then
  local ids = {}
  for i = 0, n - 1 do ids[i + 1] = ARGV[4 + i * 11] end
  for i = 1, n, SLICE do
    local last = math.min(i + SLICE - 1, n)
    local scores = redis.call('ZMSCORE', K.all, unpack(ids, i, last))
    for j = i, last do known[ids[j]] = scores[j - i + 1] ~= false end
  end
end
-- A caller-chosen id may be stored in another queue: the id index (inline only)
-- names its queue. A batch of ids not fresh reads the index's entries for its
-- ids per hash; a single job sets its entry only if absent (the write it makes
-- anyway). An entry left behind by a job since deleted does not count.
local owners = {}
if inline and n > 1 and not fresh then
  local groups = {}
  for i = 0, n - 1 do
    local b = 4 + i * 11
    local ids = groups[ARGV[b + 8]]
    if not ids then ids = {}; groups[ARGV[b + 8]] = ids end
    ids[#ids + 1] = ARGV[b]
  end
  for position, ids in pairs(groups) do
    for i = 1, #ids, SLICE do
      local last = math.min(i + SLICE - 1, #ids)
      local got = redis.call('HMGET', KEYS[tonumber(position)], unpack(ids, i, last))
      for j = i, last do
        local owner = got[j - i + 1]
        if owner and owner ~= queue then owners[ids[j]] = owner end
      end
    end
  end
end
local function esc(name)
  return (string.gsub(string.gsub(string.gsub(name, '%%', '%%25'), '{', '%%7B'), '}', '%%7D'))
end
-- The hash of job id in queue owner, if it exists.
local function stored_in(owner, id)
  local base = string.sub(P, 1, #P - #esc(queue) - 2)
  local hash = base .. esc(owner) .. '}:j:' .. id
  if redis.call('EXISTS', hash) == 1 then return hash end
  return nil
end
for i = 0, n - 1 do
  local b = 4 + i * 11
  local id, key, prio, sa = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  -- '~' marks a job asked for now: ready now, even if this clock is behind the producer's.
  local asap = string.byte(sa, 1) == 126
  if asap then
    sa = string.sub(sa, 2)
    if tonumber(sa) > now then sa = F(now) end
  end
  local holder, hash = nil, nil
  if inline then
    local owner = owners[id]
    if n == 1 and redis.call('HSETNX', KEYS[tonumber(ARGV[b + 8])], id, queue) == 0 then
      owner = redis.call('HGET', KEYS[tonumber(ARGV[b + 8])], id)
      if owner == queue then owner = nil end
    end
    if owner then
      hash = stored_in(owner, id)
      if hash then holder = id end
    end
    if not hash and (n > 1 or owner) then
      local bucket = indexed[ARGV[b + 8]]
      if not bucket then bucket = {}; indexed[ARGV[b + 8]] = bucket end
      bucket[#bucket + 1] = id
      bucket[#bucket + 1] = queue
    end
  end
  if holder then
    -- nothing of this queue to check: the id is another queue's job
  elseif n > 1 then
    if known[id] then holder = id end
  elseif redis.call('ZADD', K.all, 'NX', 0, id) == 0 then
    holder = id
  end
  if not holder and key ~= '' then
    holder = key_holder(key, now)
    if holder and n == 1 then redis.call('ZREM', K.all, id) end
  end
  if holder then
    -- Its id first: a record that does not decode is shown by id.
    local flat = redis.call('HGETALL', hash or J(holder))
    table.insert(flat, 1, holder)
    out[#out + 1] = flat
  else
    local st = 'queued'
    if not asap and tonumber(sa) > now then st = 'scheduled' end
    local fields = {'d', ARGV[b + 4], 'st', st, 'p', prio, 'sa', sa, 'att', 0,
                    'm', ARGV[b + 5], 'n', ARGV[b + 7]}
    if key ~= '' then
      redis.call('HSET', K.keys, key, id)
      fields[#fields + 1] = 'k'; fields[#fields + 1] = key
    end
    if ARGV[b + 6] ~= '' then fields[#fields + 1] = 't'; fields[#fields + 1] = ARGV[b + 6] end
    if waited then fields[#fields + 1] = 'wt'; fields[#fields + 1] = '1' end
    if ARGV[b + 9] ~= '' then fields[#fields + 1] = 'mt'; fields[#fields + 1] = ARGV[b + 9] end
    if ARGV[b + 10] ~= '' then fields[#fields + 1] = 'lim'; fields[#fields + 1] = ARGV[b + 10] end
    redis.call('HSET', J(id), unpack(fields))
    if st == 'scheduled' then
      event('enqueued', id, ARGV[b + 7], F(now), 'due', sa)
    else
      event('enqueued', id, ARGV[b + 7], F(now))
    end
    if n > 1 then
      known[id] = true  -- the same id twice in one batch: the second finds the first
      added[#added + 1] = 0
      added[#added + 1] = id
    end
    if st == 'queued' then
      local list = ready[prio]
      if not list then list = {}; ready[prio] = list end
      list[#list + 1] = sa
      list[#list + 1] = id
      queued = queued + 1
    else
      delayed[#delayed + 1] = sa
      delayed[#delayed + 1] = id
    end
    stored = stored + 1
    out[#out + 1] = st
  end
end
for position, pairs_ in pairs(indexed) do many('HSET', KEYS[tonumber(position)], pairs_) end
many('ZADD', K.all, added)
for prio, list in pairs(ready) do
  many('ZADD', R(prio), list)
  redis.call('ZADD', K.prios, prio, prio)
end
many('ZADD', K.delayed, delayed)
tally('queued', queued)
tally('scheduled', stored - queued)
flush()
-- A scheduled job wakes claimers too, so a blocked one shortens its wait.
if stored > 0 then wake(math.max(queued, 1)) end
return out
