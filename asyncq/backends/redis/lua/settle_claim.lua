local A = batch_args()
local now = now_s()
local groups = tonumber(A[5])
local applied, pos = {}, 6
for g = 1, groups do
  use(KEYS[g])
  local last = pos + 7 * tonumber(A[pos])
  settle_range(A, pos + 1, last, now, applied)
  pos = last + 1
end
return {applied, claim_from(groups + 1, #KEYS, tonumber(A[1]), A[2], tonumber(A[3]), A[4], now)}
