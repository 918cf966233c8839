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

-- The job event stream of the current queue: one XADD per event, in the
-- script that makes the change (see scripts.py, "P ev"). EV is false in the
-- scripts of a backend made with events off (their ":quiet" variants).
local EV = true
local function event(kind, id, name, at, ...)
  if EV then
    redis.call('XADD', P .. 'ev', '*', 'k', kind, 'j', id, 'n', name or '', 'at', at, ...)
  end
end

local function now_s()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function F(x) return string.format('%.17g', x) end
local function J(id) return P .. 'j:' .. id end
local function R(prio) return P .. 'r:' .. prio end
local function FIN(state) return P .. 'f:' .. state end

local LIVE = {waiting = true, scheduled = true, queued = true, active = true, failed = true}
local KNOWN = {waiting = true, scheduled = true, queued = true, active = true, failed = true,
               completed = true, dead = true, cancelled = true}
local TERMINAL = {completed = true, dead = true, cancelled = true}

-- A job hash may hold what no script wrote (a field set by hand, a bug in
-- another writer). A script reads each number with num() (nil when it is not
-- a finite number) or checks it with is_prio(), before its first write for
-- that job, and takes a job it cannot read aside (see spoil) instead of
-- failing halfway: Redis does not undo the writes a failing script made.
local function num(x)
  local v = tonumber(x)
  if v ~= v or v == math.huge or v == -math.huge then return nil end
  return v
end
-- A priority names a key (r:<priority>) and scores 'prios': only what the
-- backend writes, a 64-bit integer.
local function is_prio(p)
  return p ~= false and p ~= nil and #p <= 20 and string.find(p, '^-?%d+$') ~= nil
end

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
  elseif st ~= 'waiting' then
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
  elseif st ~= 'waiting' then
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
  if st ~= 'completed' or not ttl or not fin then return false end
  local f, t = num(fin), num(ttl)
  -- A TTL or finish time that is not a number: kept, as without a TTL.
  return f ~= nil and t ~= nil and f + t <= now
end

-- (_common.holds_key) 'kt', the key_ttl, is there only for jobs enqueued with one.
local function holds_key(id, now)
  local h = redis.call('HMGET', J(id), 'st', 'fin', 't', 'kt')
  if not h[1] then return false end
  if LIVE[h[1]] then return true end
  if h[4] then
    local f, kt = num(h[2]), num(h[4])
    return f ~= nil and kt ~= nil and f + kt > now
  end
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

local function json_string(s)
  return '"' .. (string.gsub(s, '[%c"\\]', function(c)
    return string.format('\\u%04x', string.byte(c))
  end)) .. '"'
end

-- An attempt number for an error entry: '0' unless att holds a whole number.
local function attempt_of(att)
  local v = num(att)
  if v and v == math.floor(v) then return string.format('%d', v) end
  return '0'
end

-- Dependencies (enqueue(after=...)): a child's hash has 'pa' (its parents'
-- ids, '\n'-separated) and 'af' ('run' for after_failure="run"); a parent's
-- has 'ch' (its children's ids), which only a job with children has, so a
-- plain job's end pays nothing for them. Parents and children share a queue.
local function ids_of(text)
  local out = {}
  if text then
    for id in string.gmatch(text, '[^\n]+') do out[#out + 1] = id end
  end
  return out
end

-- _common.released: what the parents pa (of a waiting child whose
-- after_failure is af) make of it now: 'wait', 'ready', or the state of the
-- first parent that ended dead or cancelled, with that parent's id.
local function verdict(pa, af)
  local pending = false
  for _, p in ipairs(ids_of(pa)) do
    local st = redis.call('HGET', J(p), 'st')
    if st then
      if (st == 'dead' or st == 'cancelled') and af ~= 'run' then return st, p end
      if not TERMINAL[st] then pending = true end
    end
  end
  if pending then return 'wait' end
  return 'ready'
end

-- _common.dependency_error, as errors are stored (JSON).
local function dependency_error(parent, st, att, now)
  local message = 'parent ' .. parent .. ' ended ' .. st .. ', so this job did not run'
    .. " (enqueue it with after_failure='run' to run it anyway)"
  return '{"kind":"dependency","message":' .. json_string(message) .. ',"attempt":'
    .. attempt_of(att) .. ',"at":' .. F(now) .. '}'
end

local finish

-- Release the waiting children among the ids of text (their parent finished or
-- was removed): each is decided by verdict(); one that ends dead or cancelled
-- releases its own children in turn (through finish). Wakes claimers.
local function release(text, now)
  local woke = 0
  for _, c in ipairs(ids_of(text)) do
    local h = redis.call('HMGET', J(c), 'st', 'pa', 'af', 'p', 'sa', 'att')
    if h[1] == 'waiting' then
      local v, parent = verdict(h[2], h[3])
      if v == 'ready' then
        local sa = num(h[5]) or now
        local st = 'queued'
        if sa > now then st = 'scheduled' end
        tally('waiting', -1)
        redis.call('HSET', J(c), 'st', st)
        place(c, st, h[4], sa)
        woke = woke + 1
      elseif v ~= 'wait' then
        tally('waiting', -1)
        finish(c, v, h[4], now, with_error(c, dependency_error(parent, v, h[6], now), {}))
      end
    end
  end
  if woke > 0 then wake(woke) end
end

-- A job, taken out of its index by the caller, ends in st (completed, dead, cancelled).
-- Dead or cancelled, it frees its key, unless it has a key_ttl: then it keeps
-- the key's entry, and holds_key tells for how long. One read of the hash
-- serves that, its waiters ('wt') and its children ('ch').
finish = function(id, st, prio, now, fields)
  redis.call('HSET', J(id), 'st', st, 'fin', F(now), unpack(fields))
  place(id, st, prio, now)
  local h = redis.call('HMGET', J(id), 'wt', 'ch', 'k', 'kt')
  if st ~= 'completed' and h[3] and not h[4] and redis.call('HGET', K.keys, h[3]) == id then
    redis.call('HDEL', K.keys, h[3])
  end
  if h[1] then notify(id) end
  if h[2] then release(h[2], now) end
end

-- The error (JSON, as errors are stored) of a job taken aside because its
-- field holds value, which no script wrote: the same error as the backend's
-- (_poison.unreadable_error), the raw field in hex.
local RAW_SHOWN = 2048
local function unreadable_error(id, field, value, why, att, now)
  local raw = value or ''
  local more = ''
  if #raw > RAW_SHOWN then more = ' (first ' .. RAW_SHOWN .. ' shown)' end
  local shown = string.gsub(string.sub(raw, 1, RAW_SHOWN), '.', function(c)
    return string.format('%02x', string.byte(c))
  end)
  local message = 'the stored record of job ' .. id .. ' could not be read (field ' .. field
    .. ': ' .. why .. '); it was taken aside as a dead letter: inspect it, then purge it'
    .. ' or enqueue it anew'
  return '{"kind":"undecodable","message":' .. json_string(message) .. ',"attempt":'
    .. attempt_of(att) .. ',"at":' .. F(now) .. ',"type":"UnreadableRecord","traceback":'
    .. json_string('raw field ' .. field .. ', ' .. #raw .. ' bytes' .. more .. ':\n' .. shown)
    .. '}'
end

-- Take aside a job, out of its index already (the caller tallied it out), whose
-- hash cannot be read: dead, its key freed, the error appended, waiters told.
local function spoil(id, prio, now, err)
  finish(id, 'dead', prio, now, with_error(id, err, {}))
end

-- Delete a job found in the index of state st (its own 'st' may say otherwise).
local function delete_job(id, st)
  local h = redis.call('HMGET', J(id), 'st', 'p')
  if h[1] then unplace(id, st, h[2]) end
  release_key(id)
  redis.call('ZREM', K.all, id)
  redis.call('DEL', J(id))
end

-- Move due scheduled/failed jobs to their ready set (bounded per call).
local function promote(now)
  local due = redis.call('ZRANGEBYSCORE', K.delayed, '-inf', F(now), 'LIMIT', 0, PROMOTE_MAX)
  if #due == 0 then return end
  local ready, spoilt = {}, {}
  for _, id in ipairs(due) do
    local h = redis.call('HMGET', J(id), 'st', 'p', 'sa', 'att')
    local st = h[1]
    if st == 'scheduled' or st == 'failed' then
      local sa = num(h[3])
      if sa and is_prio(h[2]) then
        redis.call('HSET', J(id), 'st', 'queued')
        tally(st, -1)
        tally('queued', 1)
        local list = ready[h[2]]
        if not list then list = {}; ready[h[2]] = list end
        list[#list + 1] = F(sa)
        list[#list + 1] = id
      else
        tally(st, -1)
        if sa then
          spoilt[#spoilt + 1] = {id, unreadable_error(id, 'p', h[2], 'not a priority', h[4], now)}
        else
          spoilt[#spoilt + 1] = {id, unreadable_error(id, 'sa', h[3], 'not a time', h[4], now)}
        end
      end
    elseif st and not KNOWN[st] then
      -- Counted as scheduled or failed: only a job never tried (att 0) is scheduled.
      if h[4] == '0' then tally('scheduled', -1) else tally('failed', -1) end
      spoilt[#spoilt + 1] = {id, unreadable_error(id, 'st', st, 'no such state', h[4], now)}
    end
  end
  many('ZREM', K.delayed, due)
  for _, bad in ipairs(spoilt) do spoil(bad[1], nil, now, bad[2]) end
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

-- Claim up to limit ready jobs from the queues KEYS[first..last], in that order.
-- Returns {now, lease expiry, earliest, then 6 per job: id, record, attempts,
-- scheduled_at, errors, progress}; the rest of a claimed job's fields are
-- known to the caller (the id only tells which job to take aside when its
-- record does not decode). A popped job whose state is unknown, or queued
-- with attempts or scheduled_at that are not numbers, is taken aside, not
-- claimed. earliest is '' unless the claim came up short: then it is the
-- earliest scheduled_at among the queues' delayed jobs (or '' if none),
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
          local h = redis.call('HMGET', J(id), 'st', 'd', 'att', 'sa', 'e', 'pr', 'c', 'n')
          local att, sa = num(h[3]), num(h[4])
          if h[1] == 'queued' and att and sa then
            n = n + 1
            att = att + 1
            redis.call('HSET', J(id), 'st', 'active', 'att', att, 'sta', started, 'w', worker,
                       'lx', expires, 'tok', base .. '.' .. n)
            if h[7] then redis.call('HDEL', J(id), 'c') end
            event('started', id, h[8], started, 'a', att, 'w', worker)
            claimed[#claimed + 1] = expires
            claimed[#claimed + 1] = id
            out[#out + 1] = id; out[#out + 1] = h[2]; out[#out + 1] = att
            out[#out + 1] = h[4]; out[#out + 1] = h[5]; out[#out + 1] = h[6]
          elseif h[1] == 'queued' then
            tally('queued', -1)
            local err
            if att then
              err = unreadable_error(id, 'sa', h[4], 'not a time', h[3], now)
            else
              err = unreadable_error(id, 'att', h[3], 'not a number', 0, now)
            end
            spoil(id, prio, now, err)
          elseif h[1] and not KNOWN[h[1]] then
            tally('queued', -1)
            spoil(id, prio, now, unreadable_error(id, 'st', h[1], 'no such state', h[3], now))
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
    local h = redis.call('HMGET', J(id), 'st', 'tok', 'p', 'sa', 'att', 't', 'wt', 'n', 'w', 'sta',
                         'ch')
    if h[1] == 'active' and h[2] == A[i + 1] then
      local prio = h[3]
      released[#released + 1] = id
      tally('active', -1)
      if st == 'completed' then
        event('completed', id, h[8], at, 'a', h[5], 'w', h[9] or '',
              'dur', F(math.max(0, now - (num(h[10]) or now))))
        if A[i + 3] == '1' then
          redis.call('HSET', J(id), 'st', st, 'fin', at, 'r', A[i + 4])
        else
          redis.call('HSET', J(id), 'st', st, 'fin', at)
        end
        completed[#completed + 1] = at
        completed[#completed + 1] = id
        tally(st, 1)
        local ttl = h[6] and num(h[6])
        if ttl then
          expiring[#expiring + 1] = F(now + ttl)
          expiring[#expiring + 1] = id
        end
        if h[7] then notify(id) end
        if h[11] then release(h[11], now) end
      elseif st == 'failed' then
        local retry_at = A[i + 6]
        if retry_at == '' then retry_at = at end
        event('retrying', id, h[8], at, 'a', h[5], 'w', h[9] or '', 'e', A[i + 5], 'due', retry_at)
        redis.call('HSET', J(id), unpack(with_error(id, A[i + 5], {'st', st, 'sa', retry_at})))
        place(id, st, prio, tonumber(retry_at))
        woke = woke + 1
      elseif st == 'queued' then
        local att, sa = num(h[5]), num(h[4])
        if att and sa and is_prio(prio) then
          redis.call('HSET', J(id), 'st', st, 'att', math.max(0, att - 1))
          place(id, st, prio, sa)
          woke = woke + 1
        elseif not att then
          spoil(id, prio, now, unreadable_error(id, 'att', h[5], 'not a number', 0, now))
        elseif not sa then
          spoil(id, prio, now, unreadable_error(id, 'sa', h[4], 'not a time', h[5], now))
        else
          spoil(id, prio, now, unreadable_error(id, 'p', prio, 'not a priority', h[5], now))
        end
      else
        if st == 'cancelled' then
          event(st, id, h[8], at, 'a', h[5], 'w', h[9] or '', 'e', A[i + 5], 'by', 'worker')
        else
          event(st, id, h[8], at, 'a', h[5], 'w', h[9] or '', 'e', A[i + 5])
        end
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
