"""The Lua scripts of the Redis backend: every state transition is one of these.

Each script works on the keys of one queue, all under the queue's prefix
``{<namespace>:q:<queue>}:`` (so they share one cluster slot), passed as
``KEYS[1]``. ``claim`` alone takes several prefixes (``KEYS[1..n]``), which the
backend only groups together when they hash to the same slot.

Keys under a queue prefix ``P`` (layout version ``LAYOUT``):

``P j:<id>``         hash, one job (fields below)
``P all``            zset, every job, score 0: ordered by id (``ZRANGEBYLEX``)
``P n``              hash, state -> how many jobs of the queue are in it
``P prios``          zset, the priorities that have queued jobs, scored by priority
``P r:<priority>``   zset, queued jobs of one priority, scored by ``scheduled_at``
``P delayed``        zset, scheduled and failed jobs, scored by ``scheduled_at``
``P active``         zset, active jobs, scored by lease expiry
``P f:<state>``      zset, completed, dead or cancelled jobs, scored by ``finished_at``
``P expires``        zset, completed jobs with a result TTL, scored by expiry (prune)
``P keys``           hash, idempotency key -> id of the job holding it
``P wake``           list, wake-up tokens for blocked claimers (bounded)
``P paused``         string, exists while the queue is paused
``P done``           (a pub/sub channel, not a key) notices of finished jobs that
                     someone waits for, each carrying the job (see ``notify``)

A job is in exactly one state index (``r:<priority>``, ``delayed``,
``active``, ``f:<state>``) and counted once in ``n``. The indexes are what the
scripts need to find work; ``n`` answers ``stats``, and is changed once per
state and script call (a Lua table gathers the changes), not once per job.
Listing by state reads the state's index whole and sorts it by id when it is
small (dead and cancelled jobs among many completed ones), and otherwise walks
``all`` in id order, skipping the other states.

What a job costs, in Redis commands: an enqueue one ``HSET`` of the job,
plus per call one ``ZMSCORE`` (ids known already: a replayed call), one
``ZADD`` each to ``all`` and to the set of each priority, one ``HSET`` per
hash of the id index, the count and the wake list (a single job: ``ZADD NX``
on ``all`` instead of the ``ZMSCORE``); a claim 2 per job (one ``HMGET``, one
``HSET``) plus one ``ZPOPMIN`` and one ``ZADD`` of the ``active`` set per call;
a completion 2 per job (``HMGET``, ``HSET``) plus one ``ZREM``/``ZADD`` per
call for the indexes and one ``ZADD`` of ``expires``; a notice only for a job
waited for.

Job hash fields: ``d`` the record as enqueued (MessagePack, never rewritten),
``st`` state, ``p`` priority, ``n`` name, ``m`` max attempts, ``k`` key, ``t``
result TTL, ``att`` attempts, ``sa`` scheduled_at, ``sta`` started_at, ``fin``
finished_at, ``lx`` lease expiry, ``w`` worker, ``tok`` lease token, ``c`` "1"
when cancel is requested, ``pr`` progress, ``r`` result, ``e`` errors as
comma-separated JSON objects (the backend wraps them in brackets to decode),
``wt`` "1" once ``wait_finished`` waits for the job (or from the start, when
it was stored by ``enqueue_waited``): only then does its end publish a notice.
The lease fields ``lx``, ``w`` and ``tok`` mean something only while ``st`` is
``active``: an attempt that ends leaves them behind (one command fewer a job)
and the backend reads them as absent.

Floats cross the Lua boundary as strings formatted with ``%.17g``: Lua's own
number-to-string conversion keeps 14 digits, which would move timestamps.
"""

from __future__ import annotations

#: The key layout above, kept in ``{<namespace>}:layout``: a backend refuses to
#: open a namespace written with another. Version 1 (no marker) kept a set per
#: state and a finished set per terminal state; stores are not migrated.
LAYOUT = 2

PRELUDE = r"""
local P, K
local function use(prefix)
  P = prefix
  K = {
    all = P .. 'all', n = P .. 'n', prios = P .. 'prios', delayed = P .. 'delayed',
    active = P .. 'active', expires = P .. 'expires', keys = P .. 'keys',
    wake = P .. 'wake', paused = P .. 'paused', done = P .. 'done',
  }
end
use(KEYS[1])

local WAKE_CAP = 128
local PROMOTE_MAX = 1000
-- unpack() copies onto Lua's C stack, which holds a few thousand values: long
-- argument lists go to Redis in slices of this many.
local SLICE = 1000

local function now_s()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function F(x) return string.format('%.17g', x) end
local function J(id) return P .. 'j:' .. id end
local function R(prio) return P .. 'r:' .. prio end
local function FIN(state) return P .. 'f:' .. state end

local LIVE = {scheduled = true, queued = true, active = true, failed = true}

-- cmd(key, ...list), in slices (list: members, or score-member pairs).
local function many(cmd, key, list)
  for i = 1, #list, SLICE do
    redis.call(cmd, key, unpack(list, i, math.min(i + SLICE - 1, #list)))
  end
end

-- Counts by state: changes gather here and reach the queue's 'n' hash in flush().
local D = {}
local function tally(st, d) D[st] = (D[st] or 0) + d end
local function flush()
  for st, d in pairs(D) do
    if d ~= 0 then redis.call('HINCRBY', K.n, st, d) end
  end
  D = {}
end

-- Take a job out of the index of its state (the caller writes its new state).
local function unplace(id, st, prio)
  if st == 'queued' then
    redis.call('ZREM', R(prio), id)
    if redis.call('ZCARD', R(prio)) == 0 then redis.call('ZREM', K.prios, prio) end
  elseif st == 'scheduled' or st == 'failed' then
    redis.call('ZREM', K.delayed, id)
  elseif st == 'active' then
    redis.call('ZREM', K.active, id)
  else
    redis.call('ZREM', FIN(st), id)
    if st == 'completed' then redis.call('ZREM', K.expires, id) end
  end
  tally(st, -1)
end

-- Index a job in state st; score is scheduled_at, lease expiry or finished_at.
-- The caller writes 'st' into the job hash, with whatever else the transition sets.
local function place(id, st, prio, score)
  if st == 'queued' then
    redis.call('ZADD', R(prio), F(score), id)
    redis.call('ZADD', K.prios, prio, prio)
  elseif st == 'scheduled' or st == 'failed' then
    redis.call('ZADD', K.delayed, F(score), id)
  elseif st == 'active' then
    redis.call('ZADD', K.active, F(score), id)
  else
    redis.call('ZADD', FIN(st), F(score), id)
  end
  tally(st, 1)
end

-- Push up to n wake tokens (one per claimable job, so n idle workers wake).
local function wake(n)
  if n <= 0 or redis.call('EXISTS', K.paused) == 1 then return end
  local tokens = {}
  for i = 1, math.min(n, WAKE_CAP) do tokens[i] = '1' end
  if redis.call('LPUSH', K.wake, unpack(tokens)) > WAKE_CAP then
    redis.call('LTRIM', K.wake, 0, WAKE_CAP - 1)
  end
end

local function expired(st, fin, ttl, now)
  return st == 'completed' and ttl and fin and tonumber(fin) + tonumber(ttl) <= now
end

local function holds_key(id, now)
  local h = redis.call('HMGET', J(id), 'st', 'fin', 't')
  if not h[1] then return false end
  if LIVE[h[1]] then return true end
  return h[1] == 'completed' and not expired(h[1], h[2], h[3], now)
end

local function key_holder(key, now)
  local id = redis.call('HGET', K.keys, key)
  if id and holds_key(id, now) then return id end
  return nil
end

local function release_key(id)
  local k = redis.call('HGET', J(id), 'k')
  if k and redis.call('HGET', K.keys, k) == id then redis.call('HDEL', K.keys, k) end
end

-- fields (for one HSET of the job) with err appended to the job's errors.
local function with_error(id, err, fields)
  if err ~= nil and err ~= '' then
    local e = redis.call('HGET', J(id), 'e')
    if e then err = e .. ',' .. err end
    fields[#fields + 1] = 'e'
    fields[#fields + 1] = err
  end
  return fields
end

-- The notice of a finished job that someone waits for ('wt', see WATCH): the
-- job itself, packed as the backend packs arguments ("len,len,...;" then the
-- strings), its id first, then its HGETALL. Jobs nobody waits for cost nothing.
local function notify(id)
  local flat = redis.call('HGETALL', J(id))
  local lens = {#id}
  for i = 1, #flat do lens[i + 1] = #flat[i] end
  redis.call('PUBLISH', K.done, table.concat(lens, ',') .. ';' .. id .. table.concat(flat))
end

-- A job, taken out of its index by the caller, ends in st (completed, dead, cancelled).
local function finish(id, st, prio, now, fields)
  redis.call('HSET', J(id), 'st', st, 'fin', F(now), unpack(fields))
  place(id, st, prio, now)
  if st ~= 'completed' then release_key(id) end
  if redis.call('HEXISTS', J(id), 'wt') == 1 then notify(id) end
end

local function delete_job(id)
  local h = redis.call('HMGET', J(id), 'st', 'p')
  if h[1] then unplace(id, h[1], h[2]) end
  release_key(id)
  redis.call('ZREM', K.all, id)
  redis.call('DEL', J(id))
end

-- Move due scheduled/failed jobs to their ready set (bounded per call).
local function promote(now)
  local due = redis.call('ZRANGEBYSCORE', K.delayed, '-inf', F(now), 'LIMIT', 0, PROMOTE_MAX)
  if #due == 0 then return end
  local ready = {}
  for _, id in ipairs(due) do
    local h = redis.call('HMGET', J(id), 'st', 'p', 'sa')
    if h[1] == 'scheduled' or h[1] == 'failed' then
      redis.call('HSET', J(id), 'st', 'queued')
      tally(h[1], -1)
      tally('queued', 1)
      local list = ready[h[2]]
      if not list then list = {}; ready[h[2]] = list end
      list[#list + 1] = h[3]
      list[#list + 1] = id
    end
  end
  many('ZREM', K.delayed, due)
  for prio, list in pairs(ready) do
    many('ZADD', R(prio), list)
    redis.call('ZADD', K.prios, prio, prio)
  end
end

-- A batch's arguments. redis-py packs each argument in Python, so where the
-- backend calls through it a batch travels as one: "len,len,...;" then the
-- fields back to back. Its own connection (hiredis packs in C) sends them as
-- they are, which spares this parsing.
local function batch_args()
  if #ARGV ~= 1 then return ARGV end
  local s = ARGV[1]
  local sep = string.find(s, ';', 1, true)
  local out, pos = {}, sep + 1
  for len in string.gmatch(string.sub(s, 1, sep - 1), '%d+') do
    local n = tonumber(len)
    out[#out + 1] = string.sub(s, pos, pos + n - 1)
    pos = pos + n
  end
  return out
end

local function json_string(s)
  return '"' .. (string.gsub(s, '[%c"\\]', function(c)
    return string.format('\\u%04x', string.byte(c))
  end)) .. '"'
end
-- Claim up to limit ready jobs from the queues KEYS[first..last], in that order.
-- Returns {now, lease expiry, earliest, then 5 per job: record, attempts,
-- scheduled_at, errors, progress}; the rest of a claimed job's fields are
-- known to the caller. earliest is '' unless the claim came up short: then it
-- is the earliest scheduled_at among the queues' delayed jobs (or '' if none),
-- and the queues' wake tokens, stale with nothing ready, are dropped (as PEEK
-- does), so the caller may block on the wake lists without peeking first.
local function claim_from(first, last, limit, worker, lease_for, base, now)
  local started, expires = F(now), F(now + lease_for)
  local out, n = {started, expires, ''}, 0
  for q = first, last do
    if n >= limit then break end
    use(KEYS[q])
    if redis.call('EXISTS', K.paused) == 0 then
      promote(now)
      local claimed = {}
      for _, prio in ipairs(redis.call('ZREVRANGE', K.prios, 0, -1)) do
        if n >= limit then break end
        local want = limit - n
        local popped = redis.call('ZPOPMIN', R(prio), want)
        for j = 1, #popped, 2 do
          local id = popped[j]
          local h = redis.call('HMGET', J(id), 'st', 'd', 'att', 'sa', 'e', 'pr', 'c')
          if h[1] == 'queued' then
            n = n + 1
            local att = tonumber(h[3]) + 1
            redis.call('HSET', J(id), 'st', 'active', 'att', att, 'sta', started, 'w', worker,
                       'lx', expires, 'tok', base .. '.' .. n)
            if h[7] then redis.call('HDEL', J(id), 'c') end
            claimed[#claimed + 1] = expires
            claimed[#claimed + 1] = id
            out[#out + 1] = h[2]; out[#out + 1] = att; out[#out + 1] = h[4]
            out[#out + 1] = h[5]; out[#out + 1] = h[6]
          end
        end
        -- Fewer popped than asked for: the set is empty, without asking.
        if #popped < 2 * want or redis.call('ZCARD', R(prio)) == 0 then
          redis.call('ZREM', K.prios, prio)
        end
      end
      many('ZADD', K.active, claimed)
      tally('queued', -#claimed / 2)
      tally('active', #claimed / 2)
      flush()
    end
  end
  if n < limit then
    local earliest = nil
    for q = first, last do
      use(KEYS[q])
      if redis.call('EXISTS', K.paused) == 0 then
        local head = redis.call('ZRANGE', K.delayed, 0, 0, 'WITHSCORES')
        if head[2] and (earliest == nil or tonumber(head[2]) < earliest) then
          earliest = tonumber(head[2])
        end
      end
      redis.call('DEL', K.wake)
    end
    if earliest then out[3] = F(earliest) end
  end
  return out
end

-- Apply the outcomes A[from..to] (7 each: id, token, state, has_result, result,
-- error JSON, retry_at) to jobs of the current queue; append 1 (applied) or 0
-- to out for each.
local function settle_range(A, from, to, now, out)
  local at = F(now)
  local woke = 0
  local released, completed, expiring = {}, {}, {}
  for i = from, to, 7 do
    local id, st = A[i], A[i + 2]
    local h = redis.call('HMGET', J(id), 'st', 'tok', 'p', 'sa', 'att', 't', 'wt')
    if h[1] == 'active' and h[2] == A[i + 1] then
      local prio = h[3]
      released[#released + 1] = id
      tally('active', -1)
      if st == 'completed' then
        if A[i + 3] == '1' then
          redis.call('HSET', J(id), 'st', st, 'fin', at, 'r', A[i + 4])
        else
          redis.call('HSET', J(id), 'st', st, 'fin', at)
        end
        completed[#completed + 1] = at
        completed[#completed + 1] = id
        tally(st, 1)
        if h[6] then
          expiring[#expiring + 1] = F(now + tonumber(h[6]))
          expiring[#expiring + 1] = id
        end
        if h[7] then notify(id) end
      elseif st == 'failed' then
        local retry_at = A[i + 6]
        if retry_at == '' then retry_at = at end
        redis.call('HSET', J(id), unpack(with_error(id, A[i + 5], {'st', st, 'sa', retry_at})))
        place(id, st, prio, tonumber(retry_at))
        woke = woke + 1
      elseif st == 'queued' then
        redis.call('HSET', J(id), 'st', st, 'att', math.max(0, tonumber(h[5]) - 1))
        place(id, st, prio, tonumber(h[4]))
        woke = woke + 1
      else
        finish(id, st, prio, now, with_error(id, A[i + 5], {}))
      end
      out[#out + 1] = 1
    else
      out[#out + 1] = 0
    end
  end
  many('ZREM', K.active, released)
  many('ZADD', FIN('completed'), completed)
  many('ZADD', K.expires, expiring)
  flush()
  wake(woke)
end
"""

# KEYS: the queue prefix; outside a cluster also the index buckets, then the queue registry.
# ARGV (maybe packed, see batch_args): n, queue, '1' if the caller waits for the jobs
# (they are stored marked, see WATCH) or '', then 9 per job: id, key, priority,
# scheduled_at, record, max_attempts, ttl, name, and the KEYS position of the job's index
# bucket (unused in a cluster).
# Returns per job: the stored state, or the holder's HGETALL when its key is held.
ENQUEUE = r"""
local ARGV = batch_args()
local n, queue = tonumber(ARGV[1]), ARGV[2]
local now = now_s()
local out, queued, stored = {}, 0, 0
local ready, delayed, indexed, added = {}, {}, {}, {}
-- Outside a cluster the caller passes the id index and the queue registry as
-- KEYS[2..n] (KEYS[n] the registry), so one script call does the whole enqueue.
local inline = #KEYS > 1
if inline then redis.call('SADD', KEYS[#KEYS], queue) end
-- Ids known already (a call replayed after a lost reply) answer with the job as
-- stored. A batch asks for all of them at once and adds the new ones at the end.
local known = {}
if n > 1 then
  local ids = {}
  for i = 0, n - 1 do ids[i + 1] = ARGV[4 + i * 9] end
  for i = 1, n, SLICE do
    local last = math.min(i + SLICE - 1, n)
    local scores = redis.call('ZMSCORE', K.all, unpack(ids, i, last))
    for j = i, last do known[ids[j]] = scores[j - i + 1] ~= false end
  end
end
local waited = ARGV[3] == '1'
for i = 0, n - 1 do
  local b = 4 + i * 9
  local id, key, prio, sa = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  -- '~' marks a job asked for now: ready now, even if this clock is behind the producer's.
  local asap = string.byte(sa, 1) == 126
  if asap then
    sa = string.sub(sa, 2)
    if tonumber(sa) > now then sa = F(now) end
  end
  if inline then
    local bucket = indexed[ARGV[b + 8]]
    if not bucket then bucket = {}; indexed[ARGV[b + 8]] = bucket end
    bucket[#bucket + 1] = id
    bucket[#bucket + 1] = queue
  end
  local holder = nil
  if n > 1 then
    if known[id] then holder = id end
  elseif redis.call('ZADD', K.all, 'NX', 0, id) == 0 then
    holder = id
  end
  if not holder and key ~= '' then
    holder = key_holder(key, now)
    if holder and n == 1 then redis.call('ZREM', K.all, id) end
  end
  if holder then
    out[#out + 1] = redis.call('HGETALL', J(holder))
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
    redis.call('HSET', J(id), unpack(fields))
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
"""

# KEYS: queue prefixes, in claim order. ARGV: limit, worker, lease_for, token base.
# Returns what claim_from does.
CLAIM = r"""
return claim_from(1, #KEYS, tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), ARGV[4], now_s())
"""

# ARGV: lease_for, then (id, token) pairs. Returns {lost ids, cancel-requested ids}.
HEARTBEAT = r"""
local expires = F(now_s() + tonumber(ARGV[1]))
local lost, cancel = {}, {}
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  local h = redis.call('HMGET', J(id), 'st', 'tok', 'c')
  if h[1] == 'active' and h[2] == ARGV[i + 1] then
    redis.call('HSET', J(id), 'lx', expires)
    redis.call('ZADD', K.active, expires, id)
    if h[3] == '1' then cancel[#cancel + 1] = id end
  else
    lost[#lost + 1] = id
  end
end
return {lost, cancel}
"""

# ARGV: id, token, progress.
PROGRESS = r"""
local h = redis.call('HMGET', J(ARGV[1]), 'st', 'tok')
if h[1] ~= 'active' or h[2] ~= ARGV[2] then return 0 end
redis.call('HSET', J(ARGV[1]), 'pr', ARGV[3])
return 1
"""

# ARGV (maybe packed, see batch_args): 7 per outcome, as settle_range reads them.
# Returns 1 or 0 per outcome.
SETTLE = r"""
local out = {}
local A = batch_args()
settle_range(A, 1, #A, now_s(), out)
return out
"""

# settle, then claim, in one call. KEYS: the prefixes of the queues settled
# (one group of outcomes each), then those to claim from. ARGV (maybe packed):
# limit, worker, lease_for, token base, number of settled queues, then for
# each of them: its count of outcomes and 7 per outcome.
# Returns {1 or 0 per outcome, what claim_from returns}.
SETTLE_CLAIM = r"""
local A = batch_args()
local now = now_s()
local groups = tonumber(A[5])
local applied, pos = {}, 6
for g = 1, groups do
  use(KEYS[g])
  local last = pos + 7 * tonumber(A[pos])
  settle_range(A, pos + 1, last, now, applied)
  pos = last + 1
end
return {applied, claim_from(groups + 1, #KEYS, tonumber(A[1]), A[2], tonumber(A[3]), A[4], now)}
"""

# ARGV: batch size. Returns how many lapsed leases it released.
RECOVER = r"""
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
"""

# ARGV: id. Returns the job, or nil when unknown or its result expired. A job
# not finished yet is marked as waited for ('wt'), so its notice carries it.
WATCH = r"""
local h = redis.call('HMGET', J(ARGV[1]), 'st', 'fin', 't')
if not h[1] or expired(h[1], h[2], h[3], now_s()) then return false end
if LIVE[h[1]] then redis.call('HSET', J(ARGV[1]), 'wt', '1') end
return redis.call('HGETALL', J(ARGV[1]))
"""

# ARGV: id. Returns the job after the change, or nil.
CANCEL = r"""
local id = ARGV[1]
local h = redis.call('HMGET', J(id), 'st', 'p', 'fin', 't')
if not h[1] then return false end
local now = now_s()
if expired(h[1], h[3], h[4], now) then return false end
if h[1] == 'active' then
  redis.call('HSET', J(id), 'c', '1')
elseif LIVE[h[1]] then
  unplace(id, h[1], h[2])
  finish(id, 'cancelled', h[2], now, {})
  flush()
end
return redis.call('HGETALL', J(id))
"""

# ARGV: id. Returns the job, or nil when unknown or its result expired.
GET = r"""
local h = redis.call('HMGET', J(ARGV[1]), 'st', 'fin', 't')
if not h[1] or expired(h[1], h[2], h[3], now_s()) then return false end
return redis.call('HGETALL', J(ARGV[1]))
"""

# ARGV: ids. Returns the ids put back in the queue.
RETRY_DEAD = r"""
local now = now_s()
local out = {}
for _, id in ipairs(ARGV) do
  local h = redis.call('HMGET', J(id), 'st', 'p', 'k')
  if h[1] == 'dead' and not (h[3] and key_holder(h[3], now)) then
    if h[3] then redis.call('HSET', K.keys, h[3], id) end
    unplace(id, 'dead', h[2])
    redis.call('HDEL', J(id), 'fin')
    redis.call('HSET', J(id), 'st', 'queued', 'att', 0, 'sa', F(now))
    place(id, 'queued', h[2], now)
    out[#out + 1] = id
  end
end
flush()
wake(#out)
return out
"""

# ARGV: batch size. Deletes completed jobs whose result TTL passed; returns their ids.
PRUNE = r"""
local ids = redis.call('ZRANGEBYSCORE', K.expires, '-inf', F(now_s()), 'LIMIT', 0,
                       tonumber(ARGV[1]))
for _, id in ipairs(ids) do delete_job(id) end
flush()
return ids
"""

# ARGV: older_than, limit, states... Returns the ids deleted.
PURGE = r"""
local out = {}
local limit = tonumber(ARGV[2])
for i = 3, #ARGV do
  if #out >= limit then break end
  local ids = redis.call('ZRANGEBYSCORE', FIN(ARGV[i]), '-inf', '(' .. ARGV[1],
                         'LIMIT', 0, limit - #out)
  for _, id in ipairs(ids) do
    delete_job(id)
    out[#out + 1] = id
  end
end
flush()
return out
"""

# ARGV: "1" to pause, "0" to resume.
SET_PAUSED = r"""
if ARGV[1] == '1' then
  redis.call('SET', K.paused, '1')
else
  redis.call('DEL', K.paused)
  wake(math.max(1, tonumber(redis.call('HGET', K.n, 'queued')) or 0))
end
return 1
"""

# ARGV: the states, in the order the counts are wanted.
# Returns {counts..., paused, oldest ready scheduled_at or ''}.
STATS = r"""
promote(now_s())
flush()
local out = {}
local counts = redis.call('HMGET', K.n, unpack(ARGV))
for i = 1, #ARGV do out[i] = tonumber(counts[i]) or 0 end
out[#out + 1] = redis.call('EXISTS', K.paused)
local oldest = nil
for _, prio in ipairs(redis.call('ZRANGE', K.prios, 0, -1)) do
  local first = redis.call('ZRANGE', R(prio), 0, 0, 'WITHSCORES')
  if first[2] and (oldest == nil or tonumber(first[2]) < oldest) then
    oldest = tonumber(first[2])
  end
end
if oldest then out[#out + 1] = F(oldest) else out[#out + 1] = '' end
return out
"""

# Returns {ready (0/1), earliest scheduled_at among delayed jobs or '', now}.
# When nothing is ready, the wake tokens left over are stale: dropping them
# spares the next blocked claimer a run of empty wake-ups.
PEEK = r"""
local now = now_s()
if redis.call('EXISTS', K.paused) == 0 then
  if redis.call('ZCARD', K.prios) > 0 then return {1, '', F(now)} end
  local first = redis.call('ZRANGE', K.delayed, 0, 0, 'WITHSCORES')
  if first[2] and tonumber(first[2]) <= now then return {1, first[2], F(now)} end
  redis.call('DEL', K.wake)
  if first[2] then return {0, first[2], F(now)} end
end
redis.call('DEL', K.wake)
return {0, '', F(now)}
"""

# ARGV: state, most. Returns the ids in the index of that state (scheduled and
# failed share one), in no order, or false when it holds more than ``most``.
STATE_IDS = r"""
local st, most = ARGV[1], tonumber(ARGV[2])
local sources = {}
if st == 'queued' then
  for _, prio in ipairs(redis.call('ZRANGE', K.prios, 0, -1)) do sources[#sources + 1] = R(prio) end
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
"""

# ARGV: state or '', name or '', then ids. Returns the jobs among them that match
# (HGETALL each), leaving out expired results.
FETCH = r"""
local st, name, now = ARGV[1], ARGV[2], now_s()
local out = {}
for i = 3, #ARGV do
  local h = redis.call('HMGET', J(ARGV[i]), 'st', 'n', 'fin', 't')
  if h[1] and (st == '' or h[1] == st) and (name == '' or h[2] == name)
      and not expired(h[1], h[3], h[4], now) then
    out[#out + 1] = redis.call('HGETALL', J(ARGV[i]))
  end
end
return out
"""

# ARGV: state or '', name or '', after or '', limit, scan budget.
# Walks ``all`` in id order. Returns {jobs (HGETALL each), last id examined,
# 1 when the index is exhausted}.
LIST = r"""
local st, name = ARGV[1], ARGV[2]
local start = '-'
if ARGV[3] ~= '' then start = '(' .. ARGV[3] end
local limit, budget = tonumber(ARGV[4]), tonumber(ARGV[5])
local now = now_s()
local out, scanned, cursor, exhausted = {}, 0, ARGV[3], 0
while #out < limit and scanned < budget do
  local ids = redis.call('ZRANGEBYLEX', K.all, start, '+', 'LIMIT', 0,
                         math.min(200, budget - scanned))
  if #ids == 0 then exhausted = 1; break end
  for _, id in ipairs(ids) do
    scanned = scanned + 1
    cursor = id
    local h = redis.call('HMGET', J(id), 'st', 'n', 'fin', 't')
    if h[1] and (st == '' or h[1] == st) and (name == '' or h[2] == name)
        and not expired(h[1], h[3], h[4], now) then
      out[#out + 1] = redis.call('HGETALL', J(id))
      if #out >= limit then break end
    end
  end
  start = '(' .. cursor
end
return {out, cursor, exhausted}
"""

#: name -> body; each is registered as PRELUDE + body.
SCRIPTS: dict[str, str] = {
    "enqueue": ENQUEUE,
    "claim": CLAIM,
    "heartbeat": HEARTBEAT,
    "progress": PROGRESS,
    "settle": SETTLE,
    "settle_claim": SETTLE_CLAIM,
    "recover": RECOVER,
    "cancel": CANCEL,
    "get": GET,
    "watch": WATCH,
    "retry_dead": RETRY_DEAD,
    "prune": PRUNE,
    "purge": PURGE,
    "set_paused": SET_PAUSED,
    "stats": STATS,
    "peek": PEEK,
    "state_ids": STATE_IDS,
    "fetch": FETCH,
    "list": LIST,
}
