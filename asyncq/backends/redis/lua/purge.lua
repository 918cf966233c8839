local out = {}
local limit = tonumber(ARGV[2])
for i = 3, #ARGV do
  if #out >= limit then break end
  local ids = redis.call('ZRANGEBYSCORE', FIN(ARGV[i]), '-inf', '(' .. ARGV[1],
                         'LIMIT', 0, limit - #out)
  for _, id in ipairs(ids) do
    delete_job(id, ARGV[i])
    out[#out + 1] = id
  end
end
flush()
return out
