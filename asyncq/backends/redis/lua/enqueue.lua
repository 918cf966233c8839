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
-- 'o': the jobs carry two more arguments each, key_ttl and debounce (see scripts.py).
local W = 11
if string.find(ARGV[3], 'o', 1, true) then W = 13 end
-- 'p': some jobs have parents; after the jobs' fields come 2 per job: its
-- parents ('\n'-separated, '' for none) and its after_failure ('run' or '').
-- Every parent must be a job of this queue, or an earlier job of the batch:
-- checked before anything is written, so a batch that names a missing parent
-- stores nothing (the reply is {'!', parent, child}).
local deps = string.find(ARGV[3], 'p', 1, true) ~= nil
local dbase = 4 + n * W
if deps then
  local batch = {}
  for i = 0, n - 1 do
    local id = ARGV[4 + i * W]
    for _, parent in ipairs(ids_of(ARGV[dbase + 2 * i])) do
      if not batch[parent] and redis.call('EXISTS', J(parent)) == 0 then
        return {'!', parent, id}
      end
    end
    batch[id] = true
  end
end
local waiting = 0
if inline then redis.call('SADD', KEYS[#KEYS], queue) end
-- Ids known already (a caller-chosen id, or a call replayed after a lost reply)
-- answer with the job as stored. A batch asks for all of them at once and adds the new ones at the end.
local known = {}
if n > 1 then
  local ids = {}
  for i = 0, n - 1 do ids[i + 1] = ARGV[4 + i * W] end
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
    local b = 4 + i * W
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
-- MessagePack of a string, as msgspec writes it (fixstr, str8, str16).
local function mp_str(x)
  local len = #x
  if len < 32 then return string.char(160 + len) .. x end
  if len < 256 then return string.char(217, len) .. x end
  return string.char(218, math.floor(len / 256), len % 256) .. x
end
-- The record d (msgspec's MessagePack of a JobRecord: a map whose first entry
-- is 'id') with its id own replaced by id; nil if d is not laid out so.
local function with_id(d, own, id)
  local head = ({[222] = 3, [223] = 5})[string.byte(d, 1)] or 1
  local was = mp_str(own)
  if string.sub(d, head + 1, head + 3) ~= '\162id'
     or string.sub(d, head + 4, head + 3 + #was) ~= was then
    return nil
  end
  return string.sub(d, 1, head + 3) .. mp_str(id) .. string.sub(d, head + 4 + #was)
end
-- A debounced enqueue (argument b) replaces holder, pending (_common.debounced):
-- the newer record under the holder's id, its run time, name and options.
local function debounce(holder, b, sa)
  local id, prio = ARGV[b], ARGV[b + 2]
  local h = redis.call('HMGET', J(holder), 'st', 'p')
  local d = with_id(ARGV[b + 4], id, holder)
  if not d or not is_prio(h[2]) then return false end
  unplace(holder, h[1], h[2])
  local st = 'queued'
  if tonumber(sa) > now then st = 'scheduled' end
  redis.call('HSET', J(holder), 'd', d, 'st', st, 'p', prio, 'sa', sa, 'm', ARGV[b + 5],
             'n', ARGV[b + 7])
  if ARGV[b + 6] ~= '' then redis.call('HSET', J(holder), 't', ARGV[b + 6])
  else redis.call('HDEL', J(holder), 't') end
  if ARGV[b + 9] ~= '' then redis.call('HSET', J(holder), 'mt', ARGV[b + 9])
  else redis.call('HDEL', J(holder), 'mt') end
  if ARGV[b + 10] ~= '' then redis.call('HSET', J(holder), 'lim', ARGV[b + 10])
  else redis.call('HDEL', J(holder), 'lim') end
  if waited then redis.call('HSET', J(holder), 'wt', '1') end
  -- The newer enqueue's options win, and a debounced one has no key_ttl (nor
  -- the hold of a circuit that held the holder).
  redis.call('HDEL', J(holder), 'kt', 'hu', 'ho')
  place(holder, st, prio, tonumber(sa))
  event('debounced', holder, ARGV[b + 7], F(now), 'due', sa)
  return true
end
-- Whether holder may be replaced by a debounced enqueue: pending, never claimed,
-- not set aside by a limit nor booked on its rate (_common.is_pending).
local function pending(holder)
  local h = redis.call('HMGET', J(holder), 'st', 'att', 'hb', 'rp')
  return (h[1] == 'scheduled' or h[1] == 'queued') and h[2] == '0' and not h[3] and not h[4]
end
for i = 0, n - 1 do
  local b = 4 + i * W
  local id, key, prio, sa = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local deb = W == 13 and ARGV[b + 12] ~= ''
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
  local replaced = false
  if not holder and key ~= '' then
    holder = key_holder(key, now)
    if holder and deb then
      -- Pending: replaced (or, a record not laid out as expected, found as it
      -- is); running or finished: the new job takes the key over.
      if pending(holder) then
        replaced = debounce(holder, b, sa)
      else
        holder = nil
      end
    end
    if holder and n == 1 then redis.call('ZREM', K.all, id) end
  end
  if holder then
    if replaced then wake(1) end
    -- Its id first: a record that does not decode is shown by id.
    local flat = redis.call('HGETALL', hash or J(holder))
    table.insert(flat, 1, holder)
    out[#out + 1] = flat
  else
    local st = 'queued'
    if not asap and tonumber(sa) > now then st = 'scheduled' end
    local pa, ended, ended_by = '', nil, nil
    if deps then pa = ARGV[dbase + 2 * i] end
    if pa ~= '' then
      -- _common.linked: waiting, unless the parents decide already.
      local v, parent = verdict(pa, ARGV[dbase + 2 * i + 1])
      if v ~= 'ready' then
        if v ~= 'wait' then ended, ended_by = v, parent end
        st = 'waiting'
      end
      for _, p in ipairs(ids_of(pa)) do
        local ch = redis.call('HGET', J(p), 'ch')
        if ch then ch = ch .. '\n' .. id else ch = id end
        redis.call('HSET', J(p), 'ch', ch)
      end
    end
    local fields = {'d', ARGV[b + 4], 'st', st, 'p', prio, 'sa', sa, 'att', 0,
                    'm', ARGV[b + 5], 'n', ARGV[b + 7]}
    if pa ~= '' then
      fields[#fields + 1] = 'pa'; fields[#fields + 1] = pa
      if ARGV[dbase + 2 * i + 1] == 'run' then
        fields[#fields + 1] = 'af'; fields[#fields + 1] = 'run'
      end
    end
    if key ~= '' then
      redis.call('HSET', K.keys, key, id)
      fields[#fields + 1] = 'k'; fields[#fields + 1] = key
    end
    if ARGV[b + 6] ~= '' then fields[#fields + 1] = 't'; fields[#fields + 1] = ARGV[b + 6] end
    if W == 13 and ARGV[b + 11] ~= '' then
      fields[#fields + 1] = 'kt'; fields[#fields + 1] = ARGV[b + 11]
    end
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
    if st == 'waiting' then
      if not ended then event('waiting', id, ARGV[b + 7], F(now)) end
      tally('waiting', 1)
      waiting = waiting + 1
      if ended then
        tally('waiting', -1)
        local err = dependency_error(ended_by, ended, 0, now)
        event(ended, id, ARGV[b + 7], F(now), 'e', err, 'by', 'cascade')
        finish(id, ended, prio, now, with_error(id, err, {}))
      end
    elseif st == 'queued' then
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
    if st == 'waiting' then
      -- The job as stored (waiting, or ended by a parent): its id, then its hash.
      local flat = redis.call('HGETALL', J(id))
      table.insert(flat, 1, id)
      out[#out + 1] = flat
    else
      out[#out + 1] = st
    end
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
tally('scheduled', stored - queued - waiting)
flush()
-- A scheduled job wakes claimers too, so a blocked one shortens its wait.
if stored > 0 then wake(math.max(queued, 1)) end
return out
