-- KEYS: the tag epoch, then tags. ARGV: the tags' lifetime (ms).
for i = 2, #KEYS do bump(KEYS[i], ARGV[1]) end
bump(KEYS[1], false)
return 1
