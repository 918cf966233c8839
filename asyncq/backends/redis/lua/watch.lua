local h = redis.call('HMGET', J(ARGV[1]), 'st', 'fin', 't')
if not h[1] or expired(h[1], h[2], h[3], now_s()) then return false end
if LIVE[h[1]] then redis.call('HSET', J(ARGV[1]), 'wt', '1') end
return redis.call('HGETALL', J(ARGV[1]))
