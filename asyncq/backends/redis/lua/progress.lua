local h = redis.call('HMGET', J(ARGV[1]), 'st', 'tok')
if h[1] ~= 'active' or h[2] ~= ARGV[2] then return 0 end
redis.call('HSET', J(ARGV[1]), 'pr', ARGV[3])
return 1
