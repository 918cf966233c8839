local h = redis.call('HMGET', J(ARGV[1]), 'st', 'tok', 'n', 'att')
if h[1] ~= 'active' or h[2] ~= ARGV[2] then return 0 end
event('progress', ARGV[1], h[3], F(now_s()), 'a', h[4] or '', 'pr', ARGV[3], 'pd', ARGV[4])
if ARGV[4] ~= '' then
  redis.call('HSET', J(ARGV[1]), 'pr', ARGV[3], 'pd', ARGV[4])
else
  redis.call('HSET', J(ARGV[1]), 'pr', ARGV[3])
  redis.call('HDEL', J(ARGV[1]), 'pd')
end
return 1
