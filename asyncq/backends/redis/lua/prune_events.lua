-- Trim the queue's event stream (P ev) of what retention says is old, at most
-- ARGV[1] entries: those older than ARGV[2] seconds ('' for ever), and the
-- oldest beyond the ARGV[3] newest ('' for no cap). Each trim is noted in
-- P evcut ("<last id trimmed> <how many>", newest first, the last 1000), so a
-- reader after an older id learns how many it lost.
-- Returns {how many trimmed, 1 if the batch was full}.
local batch = tonumber(ARGV[1])
local stream = P .. 'ev'
local length = redis.call('XLEN', stream)
if length == 0 then return {0, 0} end
local n = 0
if ARGV[3] ~= '' then n = math.max(0, length - tonumber(ARGV[3])) end
if ARGV[2] ~= '' then
  local oldest = math.floor((now_s() - tonumber(ARGV[2])) * 1000)
  local old = redis.call('XRANGE', stream, '-', '(' .. oldest .. '-0', 'COUNT', batch)
  n = math.max(n, #old)
end
n = math.min(n, batch)
if n == 0 then return {0, 0} end
local last = redis.call('XRANGE', stream, '-', '+', 'COUNT', n)
redis.call('XTRIM', stream, 'MAXLEN', length - n)
redis.call('LPUSH', P .. 'evcut', last[#last][1] .. ' ' .. n)
redis.call('LTRIM', P .. 'evcut', 0, 999)
if n >= batch then return {n, 1} end
return {n, 0}
