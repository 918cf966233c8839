-- Lines are JSON texts, each ended by a newline (JSON never holds a raw one):
-- appending is a concatenation, and dropping the oldest cuts at the first newline.
local h = redis.call('HMGET', J(ARGV[1]), 'st', 'tok', 'lg', 'lc', 'ld', 'n')
if h[1] ~= 'active' or h[2] ~= ARGV[2] then return 0 end
if #ARGV > 3 then
  local at = F(now_s())
  for i = 4, #ARGV do event('log', ARGV[1], h[6], at, 'ln', ARGV[i]) end
end
local cap = tonumber(ARGV[3])
local parts = {h[3] or ''}
for i = 4, #ARGV do parts[#parts + 1] = ARGV[i] .. '\n' end
local text = table.concat(parts)
local count = (tonumber(h[4]) or 0) + #ARGV - 3
local dropped = tonumber(h[5]) or 0
local from = 1
while count > cap do
  local cut = string.find(text, '\n', from, true)
  if not cut then break end
  from = cut + 1
  count = count - 1
  dropped = dropped + 1
end
if from > 1 then text = string.sub(text, from) end
redis.call('HSET', J(ARGV[1]), 'lg', text, 'lc', count, 'ld', dropped)
return 1
