-- KEYS: generations. ARGV: their lifetime (ms).
for i = 1, #KEYS do bump(KEYS[i], ARGV[1]) end
return 1
