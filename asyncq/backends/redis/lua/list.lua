-- ARGV[6] '1': newest first, walking the ids downward from below the cursor.
local st, name = ARGV[1], ARGV[2]
local down = ARGV[6] == '1'
local start = down and '+' or '-'
if ARGV[3] ~= '' then start = '(' .. ARGV[3] end
local limit, budget = tonumber(ARGV[4]), tonumber(ARGV[5])
local now = now_s()
local out, scanned, cursor, exhausted = {}, 0, ARGV[3], 0
while #out < 2 * limit and scanned < budget do
  local ids
  if down then
    ids = redis.call('ZREVRANGEBYLEX', K.all, start, '-', 'LIMIT', 0,
                     math.min(200, budget - scanned))
  else
    ids = redis.call('ZRANGEBYLEX', K.all, start, '+', 'LIMIT', 0,
                     math.min(200, budget - scanned))
  end
  if #ids == 0 then exhausted = 1; break end
  for _, id in ipairs(ids) do
    scanned = scanned + 1
    cursor = id
    local h = redis.call('HMGET', J(id), 'st', 'n', 'fin', 't')
    if h[1] and (st == '' or h[1] == st) and (name == '' or h[2] == name)
        and not expired(h[1], h[3], h[4], now) then
      out[#out + 1] = id
      out[#out + 1] = redis.call('HGETALL', J(id))
      if #out >= 2 * limit then break end
    end
  end
  start = '(' .. cursor
end
return {out, cursor, exhausted}
