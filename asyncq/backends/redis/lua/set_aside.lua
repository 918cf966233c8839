-- Take aside claimed jobs whose record the backend could not read. ARGV: 4
-- per job: id, lease token, the error (JSON), '1' when the stored errors are
-- unreadable themselves (the error replaces them) or ''. A job is taken aside
-- only while that lease holds it. Returns the ids taken aside.
local now = now_s()
local out = {}
for i = 1, #ARGV, 4 do
  local id = ARGV[i]
  local h = redis.call('HMGET', J(id), 'st', 'tok', 'p')
  if h[1] == 'active' and h[2] == ARGV[i + 1] then
    if ARGV[i + 3] == '1' then redis.call('HDEL', J(id), 'e') end
    unplace(id, 'active', h[3])
    spoil(id, h[3], now, ARGV[i + 2])
    out[#out + 1] = id
  end
end
flush()
return out
