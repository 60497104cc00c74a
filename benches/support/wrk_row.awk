# One CSV row from wrk's output (run with --latency):
#   label,rep,requests_per_sec,server_cpu_us_per_request,p50_us,p99_us,requests
# Variables: label, rep, t (server CPU ticks over the run), hz (ticks a second).
# Used by benches/cache_load.sh and benches/redis_load.sh.
function us(v) {
    if (v ~ /us$/) return v + 0;
    if (v ~ /ms$/) return v * 1000;
    return v * 1e6;
}
/^Requests\/sec/ { rps = $2 }
/requests in/ { n = $1 }
/^ +50%/ { p50 = us($2) }
/^ +99%/ { p99 = us($2) }
END { printf "%s,%s,%s,%.2f,%.0f,%.0f,%s\n", label, rep, rps, t / hz * 1e6 / n, p50, p99, n }
