local out = {}
local A = batch_args()
settle_range(A, 1, #A, now_s(), out)
return out
