local ids = redis.call('ZRANGEBYSCORE', K.expires, '-inf', F(now_s()), 'LIMIT', 0,
                       tonumber(ARGV[1]))
for _, id in ipairs(ids) do delete_job(id) end
flush()
return ids
