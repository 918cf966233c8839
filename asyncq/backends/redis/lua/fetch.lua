local st, name, now = ARGV[1], ARGV[2], now_s()
local out = {}
for i = 3, #ARGV do
  local h = redis.call('HMGET', J(ARGV[i]), 'st', 'n', 'fin', 't')
  if h[1] and (st == '' or h[1] == st) and (name == '' or h[2] == name)
      and not expired(h[1], h[3], h[4], now) then
    out[#out + 1] = ARGV[i]
    out[#out + 1] = redis.call('HGETALL', J(ARGV[i]))
  end
end
return out
