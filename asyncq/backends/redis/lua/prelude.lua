local P, K
local function use(prefix)
  P = prefix
  K = {
    all = P .. 'all', n = P .. 'n', prios = P .. 'prios', delayed = P .. 'delayed',
    active = P .. 'active', expires = P .. 'expires', keys = P .. 'keys',
    wake = P .. 'wake', paused = P .. 'paused', done = P .. 'done', limits = P .. 'limits',
    circuits = P .. 'circuits',
  }
end

local WAKE_CAP = 128
-- _limits.HOLD_BUDGET: limited jobs one claim may hold back before it stops looking
local HOLD_BUDGET = 256
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
-- A queued job may wait in 'delayed' instead, held until a time (see admit).
local function unplace(id, st, prio)
  if st == 'queued' then
    redis.call('ZREM', R(prio), id)
    if redis.call('ZCARD', R(prio)) == 0 then redis.call('ZREM', K.prios, prio) end
    redis.call('ZREM', K.delayed, id)
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

-- Flow control (asyncq.backends._limits, spelled in Lua). A job with limits has
-- the field 'lim' (codec.gates_text); plain jobs have none and cost nothing
-- here. Per slot (a limit, or a keyed limit's value) of this queue:
--   P l:<slot>  hash: run (jobs active), tok (bucket at 'at'), at, c, r, per, b, name, key
--   P h:<slot>  zset: queued jobs set aside on the slot (field 'hb'), by scheduled_at
--   P limits    set: the slots this queue has counters for (limit_states)
local LET_OUT = false
local function LIM(slot) return P .. 'l:' .. slot end
local function HELD(slot) return P .. 'h:' .. slot end

local function gates_of(lim)
  local gates = {}
  for line in string.gmatch(lim, '[^\n]+') do
    local f = {}
    for part in string.gmatch(line .. '\t', '([^\t]*)\t') do f[#f + 1] = part end
    local slot = f[1]
    if f[2] and f[2] ~= '' then slot = f[1] .. '[' .. f[2] .. ']' end
    local g = {slot = slot, name = f[1], key = f[2], c = num(f[3]), r = num(f[4]),
               per = num(f[5]), b = num(f[6])}
    -- a line no backend wrote (by hand) is no limit: the job is claimed as a plain one
    if #f == 6 and slot ~= '' and g.per and g.per > 0 and g.b and g.b >= 1
       and (g.r == nil or g.r > 0) and (g.c == nil or g.c >= 1) then
      gates[#gates + 1] = g
    end
  end
  return gates
end

-- _limits.available: the bucket at now, refilled, capped at the burst
local function tokens_at(g, now)
  local h = redis.call('HMGET', LIM(g.slot), 'tok', 'at')
  local tok, at = tonumber(h[1]), tonumber(h[2])
  if tok == nil then return g.b end
  return math.min(g.b, tok + math.max(0, now - (at or now)) * g.r / g.per)
end

-- A keyed counter no job uses (_limits.idle: none running, none set aside)
-- may go once its bucket is full again, as a fresh one is: prune deletes it
-- (prune_limits.lua), and its key expires IDLE_KEEP seconds after that time
-- should no prune come; the next claim of that key makes it again. A job
-- that runs keeps it. Unkeyed counters stay.
local IDLE_KEEP = 60
local function idle_since(g, h, now)
  local tok, at = tonumber(h[2]), tonumber(h[3])
  if g.r and tok and at and tok < g.b then return at + (g.b - tok) * g.per / g.r end
  return now
end
local function expire_idle(g, now)
  if not g.key or g.key == '' then return end
  local h = redis.call('HMGET', LIM(g.slot), 'run', 'tok', 'at')
  if (tonumber(h[1]) or 0) > 0 or redis.call('EXISTS', HELD(g.slot)) == 1 then
    redis.call('PERSIST', LIM(g.slot))
  else
    redis.call('PEXPIREAT', LIM(g.slot), math.ceil((idle_since(g, h, now) + IDLE_KEEP) * 1000))
  end
end

-- Put the first live job set aside on slot back in the claim order; whether one was.
local function let_out(slot)
  while true do
    local head = redis.call('ZPOPMIN', HELD(slot))
    if #head == 0 then return false end
    local id = head[1]
    local h = redis.call('HMGET', J(id), 'st', 'hb', 'p', 'sa')
    if h[1] == 'queued' and h[2] == slot and is_prio(h[3]) and num(h[4]) then
      redis.call('HDEL', J(id), 'hb')
      LET_OUT = true
      redis.call('ZADD', R(h[3]), h[4], id)
      redis.call('ZADD', K.prios, h[3], h[3])
      wake(1)
      return true
    end
  end
end

-- Circuit breakers (_limits.circuit_admit / circuit_ended). A job behind one
-- has a line '!name<TAB>failures<TAB>within<TAB>reset_after' in 'lim'.
--   P cb:<name>  hash: st (closed, open, half_open), fl (failure times, comma
--                separated), oa (opened at), pb (the probe's id), n, w, r
--   P circuits   set: the circuits this queue has state for
local function CB(name) return P .. 'cb:' .. name end
local NOT_COUNTED = {retry = true, cancelled = true, lost = true, unknown_job = true,
                     decode = true, undecodable = true}

local function circuit_of(lim)
  for line in string.gmatch(lim, '[^\n]+') do
    if string.sub(line, 1, 1) == '!' then
      local f = {}
      for part in string.gmatch(string.sub(line, 2) .. '\t', '([^\t]*)\t') do f[#f + 1] = part end
      local b = {name = f[1], n = num(f[2]), w = num(f[3]), r = num(f[4])}
      if #f == 4 and b.name ~= '' and b.n and b.n >= 1 and b.w and b.w > 0 and b.r
         and b.r > 0 then
        return b
      end
    end
  end
  return nil
end

local function cb_load(b)
  local h = redis.call('HMGET', CB(b.name), 'st', 'fl', 'oa', 'pb')
  redis.call('HSET', CB(b.name), 'n', b.n, 'w', F(b.w), 'r', F(b.r))
  redis.call('SADD', K.circuits, b.name)
  return h[1] or 'closed', h[2] or '', num(h[3]), h[4]
end

-- nil: the job may start; else the time it waits until
local function cb_admit(b, id, now)
  local st, _, oa, pb = cb_load(b)
  if st == 'open' then
    local reopen = (oa or now) + b.r
    if now < reopen then return reopen end
    redis.call('HSET', CB(b.name), 'st', 'half_open', 'pb', id)
    return nil
  elseif st == 'half_open' then
    if not pb or pb == id then
      redis.call('HSET', CB(b.name), 'pb', id)
      return nil
    end
    return now + b.r
  end
  return nil
end

local function cb_open(key, now)
  redis.call('HSET', key, 'st', 'open', 'oa', F(now), 'fl', '')
  redis.call('HDEL', key, 'pb')
end

local function cb_ended(b, id, outcome, kind, now)
  local st, fl, _, pb = cb_load(b)
  local probe = pb == id
  local key = CB(b.name)
  if kind == 'circuit_open' then
    cb_open(key, now)
  elseif outcome == 'completed' then
    if st == 'half_open' and probe then
      redis.call('HSET', key, 'st', 'closed', 'fl', '')
      redis.call('HDEL', key, 'pb', 'oa')
    end
  elseif (outcome == 'failed' or outcome == 'dead') and not NOT_COUNTED[kind or ''] then
    if st == 'half_open' and probe then
      cb_open(key, now)
    elseif st == 'closed' then
      local recent = {}
      for t in string.gmatch(fl, '[^,]+') do
        local v = num(t)
        if v and v > now - b.w then recent[#recent + 1] = t end
      end
      recent[#recent + 1] = F(now)
      while #recent > b.n do table.remove(recent, 1) end
      if #recent >= b.n then
        cb_open(key, now)
      else
        redis.call('HSET', key, 'fl', table.concat(recent, ','))
      end
    end
  elseif probe then
    redis.call('HDEL', key, 'pb')
  end
end

-- Hold a queued job until a time: it stays queued (field 'hu', the time, and
-- 'ho', what holds it) but waits in 'delayed' as a scheduled job does, until
-- promote() puts it back in its ready set. Its count does not move.
local function hold_until(id, due, what, paid)
  redis.call('HSET', J(id), 'sa', F(due), 'hu', F(due), 'ho', what)
  if paid then redis.call('HSET', J(id), 'rp', '1') end
  redis.call('ZADD', K.delayed, F(due), id)
end

-- _limits.admit for one queued job popped from its ready set: 'start', or it
-- is set aside ('held') or held until its booked token or its circuit lets it
-- start ('later'), attempts untouched.
local function admit(id, lim, paid, prio, sa, now)
  local b = circuit_of(lim)
  if b then
    local wait_until = cb_admit(b, id, now)
    if wait_until then
      hold_until(id, wait_until, 'circuit:' .. b.name, false)
      return 'later'
    end
  end
  local gates = gates_of(lim)
  for _, g in ipairs(gates) do
    if g.c then
      local run = tonumber(redis.call('HGET', LIM(g.slot), 'run')) or 0
      if run >= g.c then
        redis.call('HSET', J(id), 'hb', g.slot)
        redis.call('ZADD', HELD(g.slot), sa, id)
        -- Its other slots may have room it was let out to use: pass it on.
        for _, o in ipairs(gates) do
          if o.c and o.slot ~= g.slot
             and (tonumber(redis.call('HGET', LIM(o.slot), 'run')) or 0) < o.c then
            let_out(o.slot)
          end
        end
        return 'held'
      end
    end
  end
  for _, g in ipairs(gates) do
    redis.call('HSET', LIM(g.slot), 'c', g.c or '', 'r', g.r or '', 'per', F(g.per),
               'b', F(g.b), 'name', g.name, 'key', g.key)
    redis.call('SADD', K.limits, g.slot)
  end
  if not paid then
    local wait, slot = 0, nil
    for _, g in ipairs(gates) do
      if g.r then
        local tok = tokens_at(g, now)
        if tok < 1 and (1 - tok) * g.per / g.r > wait then
          wait, slot = (1 - tok) * g.per / g.r, g.slot
        end
        redis.call('HSET', LIM(g.slot), 'tok', F(tok - 1), 'at', F(now))
      end
    end
    if wait > 0 then
      hold_until(id, now + wait, 'rate:' .. slot, true)
      for _, g in ipairs(gates) do expire_idle(g, now) end
      return 'later'
    end
  end
  for _, g in ipairs(gates) do
    if g.c then redis.call('HINCRBY', LIM(g.slot), 'run', 1) end
    expire_idle(g, now)
  end
  redis.call('HDEL', J(id), 'hb', 'rp')
  return 'start'
end

-- A job with limits lim left active: free its slots, let one job out of each.
local function free_slots(lim, now)
  for _, g in ipairs(gates_of(lim)) do
    if g.c then
      if redis.call('HINCRBY', LIM(g.slot), 'run', -1) < 0 then
        redis.call('HSET', LIM(g.slot), 'run', 0)
      end
      let_out(g.slot)
      expire_idle(g, now)
    end
  end
end

-- A job with 'lim' left active as outcome, with error err (JSON, or ''):
-- count it on its circuit, free its slots.
local function ended(lim, id, outcome, err, now)
  local b = circuit_of(lim)
  if b then cb_ended(b, id, outcome, string.match(err or '', '"kind":"([%w_]+)"'), now) end
  free_slots(lim, now)
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
    local h = redis.call('HMGET', J(c), 'st', 'pa', 'af', 'p', 'sa', 'att', 'n')
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
        if st == 'scheduled' then
          event('released', c, h[7], F(now), 'due', F(sa))
        else
          event('released', c, h[7], F(now))
        end
      elseif v ~= 'wait' then
        tally('waiting', -1)
        local err = dependency_error(parent, v, h[6], now)
        event(v, c, h[7], F(now), 'e', err, 'by', 'cascade')  -- before its own children's
        finish(c, v, h[4], now, with_error(c, err, {}))
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
    local h = redis.call('HMGET', J(id), 'st', 'p', 'sa', 'att', 'hu')
    local st = h[1]
    if st == 'scheduled' or st == 'failed' or (st == 'queued' and h[5]) then
      local sa = num(h[3])
      if sa and is_prio(h[2]) then
        if st == 'queued' then
          redis.call('HDEL', J(id), 'hu', 'ho')  -- held until now (see admit)
        else
          redis.call('HSET', J(id), 'st', 'queued')
        end
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
  local out, n, held = {started, expires, ''}, 0, 0
  for q = first, last do
    if n >= limit then break end
    use(KEYS[q])
    if redis.call('EXISTS', K.paused) == 0 then
      promote(now)
      local claimed = {}
      for _, prio in ipairs(redis.call('ZREVRANGE', K.prios, 0, -1)) do
        if n >= limit or held >= HOLD_BUDGET then break end
        -- A job its limits hold back leaves the ready set: pop again past it
        -- (up to HOLD_BUDGET of them). Without limits, one pass.
        local more = true
        while more do
        local want = limit - n
        local popped = redis.call('ZPOPMIN', R(prio), want)
        local stopped = 0
        for j = 1, #popped, 2 do
          local id = popped[j]
          local h = redis.call('HMGET', J(id), 'st', 'd', 'att', 'sa', 'e', 'pr', 'c', 'n',
                               'lim', 'rp')
          local att, sa = num(h[3]), num(h[4])
          local go = true
          if h[9] and h[1] == 'queued' and att and sa then
            go = admit(id, h[9], h[10] == '1', prio, h[4], now) == 'start'
            if not go then
              held = held + 1
              stopped = stopped + 1
            end
          end
          if not go then
            -- held back: set aside or booked ahead by admit
          elseif h[1] == 'queued' and att and sa then
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
          more = false
        end
        more = more and stopped > 0 and n < limit and held < HOLD_BUDGET
        end
      end
      many('ZADD', K.active, claimed)
      tally('queued', -#claimed / 2)
      tally('active', #claimed / 2)
      flush()
    end
  end
  if n < limit and (LET_OUT or held >= HOLD_BUDGET) then
    -- jobs went back to the claim order, or more are left to look at: look again now
    out[3] = started
  elseif n < limit then
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
                         'ch', 'lim')
    if h[1] == 'active' and h[2] == A[i + 1] then
      local prio = h[3]
      if h[12] then ended(h[12], id, st, A[i + 5], now) end
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

-- A call starts here, with the state above that calls change (P, K, D,
-- LET_OUT) set afresh. A script (EVALSHA) runs the whole prelude on each call;
-- the function library (scripts.LIBRARY) runs it once when loaded, leaves this
-- last line out, and calls start() before each script's body.
local function start(prefix)
  use(prefix)
  D = {}
  LET_OUT = false
end
start(KEYS[1])
