-- The queue's keyed limit counters gone idle (see expire_idle in the prelude):
-- deleted, and the slots whose counter is gone (expired) forgotten, up to
-- ARGV[2] members from the SSCAN cursor ARGV[1]. A counter a job runs on or
-- is set aside on stays. Returns the next cursor ('0': done).
local now = now_s()
local found = redis.call('SSCAN', K.limits, ARGV[1], 'COUNT', tonumber(ARGV[2]))
local gone = {}
for _, slot in ipairs(found[2]) do
  if redis.call('EXISTS', HELD(slot)) == 0 then
    local h = redis.call('HMGET', LIM(slot), 'run', 'tok', 'at', 'key', 'r', 'per', 'b')
    local g = {key = h[4], r = num(h[5]), per = num(h[6]), b = num(h[7])}
    if not h[4] and not h[1] and not h[2] then
      gone[#gone + 1] = slot  -- expired
    elseif h[4] and h[4] ~= '' and (tonumber(h[1]) or 0) <= 0 and g.per and g.b
        and idle_since(g, h, now) <= now then
      redis.call('DEL', LIM(slot))
      gone[#gone + 1] = slot
    end
  end
end
if #gone > 0 then many('SREM', K.limits, gone) end
return {found[1], #gone}
