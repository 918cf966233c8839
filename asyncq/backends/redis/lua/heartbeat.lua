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
