local h = redis.call('HMGET', J(ARGV[1]), 'st', 'tok')
if h[1] ~= 'active' or h[2] ~= ARGV[2] then return 0 end
if ARGV[4] ~= '' then
  redis.call('HSET', J(ARGV[1]), 'pr', ARGV[3], 'pd', ARGV[4])
else
  redis.call('HSET', J(ARGV[1]), 'pr', ARGV[3])
  redis.call('HDEL', J(ARGV[1]), 'pd')
end
return 1
