if ARGV[1] == '1' then
  redis.call('SET', K.paused, '1')
else
  redis.call('DEL', K.paused)
  wake(math.max(1, tonumber(redis.call('HGET', K.n, 'queued')) or 0))
end
return 1
