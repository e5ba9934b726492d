# Readers of dnsperf's report, sourced by benches/run.sh and benches/rules_cost.sh: each takes
# the file dnsperf's output went to.

dp_sent() { awk '/Queries sent:/ {print $3}' "$1"; }
dp_completed() { awk '/Queries completed:/ {print $3}' "$1"; }
dp_lost() { awk '/Queries lost:/ {print $3}' "$1"; }
dp_qps() { awk '/Queries per second:/ {printf "%.0f", $4}' "$1"; }
# dp_avg_ms FILE [DECIMALS]: the average latency in ms, with DECIMALS places (2).
dp_avg_ms() { awk -v d="${2:-2}" '/Average Latency/ {printf "%.*f", d, $4 * 1000}' "$1"; }
# dp_rcode FILE CODE: count of one response code (0 when absent).
dp_rcode() {
    grep 'Response codes:' "$1" | tr ',' '\n' | awk -v c="$2" '{for (i = 1; i < NF; i++) if ($i == c) n = $(i + 1)} END {print n + 0}'
}
