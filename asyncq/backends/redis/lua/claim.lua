return claim_from(1, #KEYS, tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), ARGV[4], now_s())
