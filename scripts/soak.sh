#!/usr/bin/env bash
# Soak test (docs/design.md, targets; not run by CI): DURATION seconds of mixed load against nodelocal-dns while
# its upstreams fail at random, then a report: queries sent, answered (by rcode), unanswered with
# a counted reason, and the server's RSS at start and end.
#
#   scripts/soak.sh                 DURATION=120 scripts/soak.sh
#
# Everything runs in a network namespace of its own (root needed), on its loopback: two knotd
# upstreams with benches/gen_zones.py's zones, nodelocal-dns (release build) in front of them,
# dnsperf over UDP and over TCP. Faults, one at a time at random intervals: an upstream frozen
# (SIGSTOP, it neither answers nor refuses), both frozen (only the cache and serve-stale answer),
# an upstream killed and restarted (its port refuses). The host's own interfaces and qdiscs are
# never touched.
#
# Environment (defaults in brackets):
#   DURATION [600]    seconds of load
#   QPS [2000]        dnsperf UDP query rate
#   TCP_QPS [200]     dnsperf TCP query rate (4 connections)
#   SEED [$RANDOM]    fault schedule seed (printed, so a run can be repeated)
#   KEEP_WORK [0]     1: keep the work directory (configs, logs, dnsperf output)
#   BIN               a nodelocal-dns binary to use instead of building one
#
# Exit status: 0 when every query was answered or its loss has a counted reason, 1 otherwise.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-600}
QPS=${QPS:-2000}
TCP_QPS=${TCP_QPS:-200}
SEED=${SEED:-$RANDOM}
PORT=10053
UP_A=127.0.1.1
UP_B=127.0.1.2
SUT=127.0.2.1
NS=nodelocal-soak-$$

log() { printf '[soak %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (a network namespace of its own)"
packages=()
need() { command -v "$1" >/dev/null 2>&1 || packages+=("$2"); }
need dnsperf dnsperf
need knotd knot
need ip iproute2
need python3 python3
if [ "${#packages[@]}" -gt 0 ]; then
    log "installing ${packages[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
    systemctl stop knot >/dev/null 2>&1 || true
fi

WORK=$(mktemp -d /tmp/nodelocal-soak.XXXXXX)
declare -A PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -CONT "$pid" 2>/dev/null || true
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    ip netns del "$NS" 2>/dev/null || true
    if [ "${KEEP_WORK:-0}" = 1 ]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

inns() { ip netns exec "$NS" "$@"; }

ip netns add "$NS"
inns ip link set lo up

if [ -n "${BIN:-}" ]; then
    cp "$BIN" "$WORK/nodelocal-dns"
else
    log "building nodelocal-dns (release)"
    (cd "$REPO" && cargo build --release --locked --bin nodelocal-dns >&2)
    cp "${CARGO_TARGET_DIR:-$REPO/target}/release/nodelocal-dns" "$WORK/nodelocal-dns"
fi

python3 "$REPO/benches/gen_zones.py" "$WORK/zones" >/dev/null

# start NAME COMMAND...: runs COMMAND in the namespace, logging to $WORK/NAME.log. `ip netns exec`
# execs the command, so the PID is the server's own (SIGSTOP reaches it).
start() {
    local name=$1
    shift
    ip netns exec "$NS" "$@" >>"$WORK/$name.log" 2>&1 &
    PIDS[$name]=$!
}

start_knot() {
    local name=$1 ip=$2 dir=$WORK/$1
    mkdir -p "$dir/db"
    cat >"$dir/knot.conf" <<EOF
server:
    listen: $ip@$PORT
    rundir: $dir
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
log:
  - target: stderr
    any: warning
database:
    storage: $dir/db
template:
  - id: default
    storage: $WORK/zones
    file: "%s.zone"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
    semantic-checks: off
zone:
  - domain: cluster.local
  - domain: test
EOF
    start "$name" knotd -c "$dir/knot.conf"
}

# answers IP QNAME: whether IP:PORT answers QNAME/A with NOERROR within 200 ms.
answers() {
    inns python3 - "$1" "$PORT" "$2" <<'EOF'
import socket, struct, sys
ip, port, qname = sys.argv[1], int(sys.argv[2]), sys.argv[3]
q = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(l)]) + l.encode() for l in qname.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.2)
try:
    s.sendto(q, (ip, port))
    a = s.recv(4096)
    sys.exit(0 if a[:2] == b"\x42\x42" and a[3] & 0x0F == 0 else 1)
except OSError:
    sys.exit(1)
EOF
}

wait_ready() {
    local name=$1 ip=$2 i
    for i in $(seq 1 100); do
        kill -0 "${PIDS[$name]}" 2>/dev/null || { tail "$WORK/$name.log" >&2; die "$name exited"; }
        answers "$ip" ns.test && return 0
        sleep 0.2
    done
    die "$name does not answer on $ip:$PORT"
}

# The server under test: `test.` fails over between both knotd, `cluster.local.` has only the
# first (its outages are served from cache, stale, or SERVFAIL). Deadlines are well inside
# dnsperf's 5 s timeout: every query must be answered.
cat >"$WORK/config.yaml" <<EOF
listen: ["$SUT:$PORT"]
workers: 2
metrics:
  listen: $SUT:9253
zones:
  - name: test
    upstreams: ["$UP_A:$PORT", "$UP_B:$PORT"]
    policy: sequential
    timeout: 500ms
    deadline: 1500ms
    max_fails: 2
    cache:
      success_ttl: 10s
  - name: cluster.local
    upstreams: ["$UP_A:$PORT"]
    timeout: 500ms
    deadline: 1500ms
    cache:
      success_ttl: 10s
EOF

metrics() {
    inns python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' \
        "http://$SUT:9253/metrics"
}
# metric NAME [LABEL_FILTER]: sum of the samples of NAME whose labels contain LABEL_FILTER.
metric() {
    awk -v name="$1" -v filter="${2:-}" '
        $1 == name || index($1, name "{") == 1 { if (filter == "" || index($1, filter)) sum += $2 }
        END { printf "%d\n", sum }' "$WORK/metrics.txt"
}
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/${PIDS[ours]}/status"; }
# Datagrams the kernel dropped because a socket's receive buffer was full, per socket of the
# namespace (/proc/net/udp's last column), kept as the largest value seen per socket inode: a
# socket's count is lost when it closes, so this is sampled during the run too.
SOCKET_DROPS=$WORK/socket-drops.txt
: >"$SOCKET_DROPS"
sample_drops() {
    inns cat /proc/net/udp | awk 'NR > 1 { print $10, $2, $NF }' >>"$SOCKET_DROPS"
}
# drops_of HEX_ADDR_PREFIX: summed drops of the sockets whose local address starts with it
# (little-endian hex as /proc/net/udp writes it); "other" for every socket not matched by the
# server's or the upstreams' addresses (dnsperf's).
drops_of() {
    awk -v want="$1" -v sut="$(hex "$SUT")" -v a="$(hex "$UP_A")" -v b="$(hex "$UP_B")" '
        { if ($3 > max[$1]) max[$1] = $3; addr[$1] = substr($2, 1, 8) }
        END {
            for (i in max) {
                x = addr[i]
                if (want == "other" ? (x != sut && x != a && x != b) : x == want) sum += max[i]
            }
            printf "%d\n", sum
        }' "$SOCKET_DROPS"
}
hex() { printf '%02X%02X%02X%02X' $(tr . ' ' <<<"$1" | awk '{print $4, $3, $2, $1}'); }

start_knot knot-a "$UP_A"
start_knot knot-b "$UP_B"
wait_ready knot-a "$UP_A"
wait_ready knot-b "$UP_B"
start ours "$WORK/nodelocal-dns" run --config "$WORK/config.yaml"
wait_ready ours "$SUT"

# The query mix: the cache-hot set, the pod search-path walk (mostly NXDOMAIN) and distinct
# misses under the *.miss.test wildcard, interleaved.
python3 - "$WORK" <<'EOF'
import random, sys
work = sys.argv[1]
rng = random.Random(9)
hot = open(f"{work}/zones/hot.txt").read().split("\n")
search = open(f"{work}/zones/search.txt").read().split("\n")
lines = [l for l in hot + search if l]
lines += [f"soak-{i}.miss.test {rng.choice(['A', 'AAAA', 'TXT'])}" for i in range(len(lines) // 4)]
rng.shuffle(lines)
open(f"{work}/queries.txt", "w").write("\n".join(lines) + "\n")
EOF

RSS_START=$(rss_kb)
log "load for ${DURATION}s: UDP ${QPS} q/s, TCP ${TCP_QPS} q/s; fault seed $SEED; RSS ${RSS_START} kB"

start dnsperf-udp dnsperf -s "$SUT" -p "$PORT" -d "$WORK/queries.txt" -l "$DURATION" -Q "$QPS" -c 8 -t 5
start dnsperf-tcp dnsperf -m tcp -s "$SUT" -p "$PORT" -d "$WORK/queries.txt" -l "$DURATION" -Q "$TCP_QPS" -c 4 -t 5

# Faults until the load ends: one every 5-15 s, held 2-8 s.
RANDOM=$SEED
FAULTS=(freeze-a freeze-b freeze-both restart-a restart-b)
WARM_AT=$((SECONDS + (DURATION / 4 < 30 ? DURATION / 4 : 30)))
RSS_WARM=
faults=0
declare -A FAULT_COUNT=()
end=$((SECONDS + DURATION - 5))
while [ $((SECONDS + 15)) -lt "$end" ]; do
    sleep $((5 + RANDOM % 11))
    sample_drops
    if [ -z "$RSS_WARM" ] && [ "$SECONDS" -ge "$WARM_AT" ]; then RSS_WARM=$(rss_kb); fi
    hold=$((2 + RANDOM % 7))
    fault=${FAULTS[RANDOM % ${#FAULTS[@]}]}
    log "fault: $fault for ${hold}s"
    faults=$((faults + 1))
    FAULT_COUNT[$fault]=$((${FAULT_COUNT[$fault]:-0} + 1))
    case "$fault" in
        freeze-a | freeze-b | freeze-both)
            targets=()
            [ "$fault" != freeze-b ] && targets+=("${PIDS[knot-a]}")
            [ "$fault" != freeze-a ] && targets+=("${PIDS[knot-b]}")
            kill -STOP "${targets[@]}"
            sleep "$hold"
            kill -CONT "${targets[@]}"
            ;;
        restart-a | restart-b)
            name=knot-${fault#restart-}
            ip=$UP_A
            [ "$name" = knot-b ] && ip=$UP_B
            kill "${PIDS[$name]}"
            wait "${PIDS[$name]}" 2>/dev/null || true
            sleep "$hold"
            start_knot "$name" "$ip"
            wait_ready "$name" "$ip"
            ;;
    esac
done

wait "${PIDS[dnsperf-udp]}" || die "dnsperf (UDP) failed: $(tail -3 "$WORK/dnsperf-udp.log")"
wait "${PIDS[dnsperf-tcp]}" || die "dnsperf (TCP) failed: $(tail -3 "$WORK/dnsperf-tcp.log")"
unset 'PIDS[dnsperf-udp]' 'PIDS[dnsperf-tcp]'
RSS_END=$(rss_kb)
sample_drops
metrics >"$WORK/metrics.txt"

# dnsperf's summary line "  Queries sent:  N" etc.
field() { awk -v key="$2" 'index($0, key) { sub(/.*: */, ""); print $1 + 0; exit }' "$1"; }
codes() { awk '/Response codes:/ { sub(/.*codes: */, ""); print; exit }' "$1"; }
sent=0 completed=0 lost=0
for mode in udp tcp; do
    f=$WORK/dnsperf-$mode.log
    s=$(field "$f" "Queries sent:")
    c=$(field "$f" "Queries completed:")
    l=$(field "$f" "Queries lost:")
    sent=$((sent + s)) completed=$((completed + c)) lost=$((lost + l))
    printf '%-4s sent %d, answered %d, lost %d; rcodes: %s\n' "$mode" "$s" "$c" "$l" "$(codes "$f")"
done

dropped=$(metric nodelocaldns_dropped_total)
rejected_tcp=$(metric nodelocaldns_rejected_total 'reason="tcp_connections"')
server_drops=$(drops_of "$(hex "$SUT")")
client_drops=$(drops_of other)
upstream_drops=$(($(drops_of "$(hex "$UP_A")") + $(drops_of "$(hex "$UP_B")")))
explained=$((dropped + rejected_tcp + server_drops + client_drops))
unexplained=$((lost > explained ? lost - explained : 0))
fault_list=""
for f in "${!FAULT_COUNT[@]}"; do fault_list+="$f ${FAULT_COUNT[$f]}, "; done

cat <<EOF
duration ${DURATION}s, fault seed $SEED, faults injected $faults (${fault_list%, })
queries sent       $sent
answered           $completed
unanswered         $lost
  server dropped (nodelocaldns_dropped_total)                 $dropped
  TCP connections refused (nodelocaldns_rejected_total)       $rejected_tcp
  server socket full, kernel dropped the query                $server_drops
  client socket full, kernel dropped the answer               $client_drops
  unexplained                                                 $unexplained
SERVFAIL from bounds (nodelocaldns_rejected_total inflight)   $(metric nodelocaldns_rejected_total 'reason="inflight"')
served stale (coredns_cache_served_stale_total)               $(metric coredns_cache_served_stale_total)
upstream failures (nodelocaldns_upstream_failures_total)      $(metric nodelocaldns_upstream_failures_total)
frozen upstreams' sockets overflowing (kernel drops)          $upstream_drops
RSS start ${RSS_START} kB (idle), warm ${RSS_WARM:-?} kB (cache filled), end ${RSS_END} kB
EOF
[ "$unexplained" -eq 0 ]
