#!/usr/bin/env bash
# Benchmarks nodelocal-dns against its peers (the targets of docs/design.md). One command:
#
#   benches/run.sh [--smoke] [SCENARIO...]      SCENARIO: 1..6 or hot rate search miss memory pair (default all)
#
# Installs what it needs (Debian: dnsperf knot unbound dnsdist dnsmasq-base), builds nodelocal-dns and
# the load generator in release, starts knotd on 127.0.1.1 as the authoritative upstream with generated
# zones, runs each server under test alone on 127.0.2.1 pinned to CPU 0 with one worker thread, and the
# load (dnsperf or benches/loadgen.rs) pinned to CPU 1. Each scenario prints one markdown table and
# writes it to benches/results/<date>-<scenario>.md. All traffic stays on 127.0.0.0/8.
#
# Environment (defaults in brackets; --smoke sets the short ones):
#   DURATION [10, smoke 2]         seconds per measured point
#   SERVERS ["ours unbound dnsdist dnsmasq", plus nodecache when NODECACHE is set]
#   NODECACHE                      path to a node-cache binary (k8s-dns-node-cache) to include
#   LATENCY_QPS [50000]            rate of the loadgen latency row in scenario 1
#   ROUNDS [1]                     scenarios 1 and 2 measure every server this many times, in turn,
#                                  and report each figure's median (CPU with its range)
#   FIXED_QPS ["20000 2000"]       rates of scenario 2 (a node's cache runs at a few thousand QPS)
#   FLOORS ["blocking reactor"]    scenario 2's no-op servers (benches/floor.rs): the cost of a wake-up
#   MISS_RATES ["2000 5000 10000"] rates of scenario 4
#   MISS_QTYPES ["A TXT"]          query types of scenario 4: A is fetched with its AAAA (two
#                                  upstream queries per miss), TXT alone (one)
#   MEM_STAGES ["100000 1000000", smoke "10000 50000"]  cached-name counts of scenario 5
#   PAIR_RATE [10000]              client rate of scenario 6 (each name asked A, then AAAA: paced, and together)
#   PAIR_FLOORS ["forward forward-blocking"]  scenario 6's relays without a cache (benches/floor.rs)
#   PAIR_STALL [0]                 seconds scenario 6's dnsmasq upstream is stopped (SIGSTOP), 1 s into
#                                  its point: how a server comes back from an upstream that stalls
#   POOL_MAX_CONNECTIONS [8]      scenario 4's pool.max_connections (dnsmasq serves at most 20)
#   POOL_MAX_QUERIES [0]           scenario 4's pool.max_queries_per_connection (dnsmasq closes after 100)
#   POOL_CONFIG [auto]             1: scenario 4 config has the upstream `pool:` block; 0: omit it;
#                                  auto: include it if this build's check-config accepts it
#   BENCH_PORT [10053]             port of every server (knotd, dnsmasq upstream, server under test)
#   KEEP_WORK [0]                  1: keep the temporary directory (configs, logs, dnsperf output)
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$BENCH_DIR")
# The command as run, with the settings given in the environment, for the result files.
COMMAND_LINE="benches/run.sh $*"
for setting in ROUNDS PAIR_RATE PAIR_STALL MISS_RATES MISS_QTYPES MEM_STAGES LATENCY_QPS FIXED_QPS FLOORS PAIR_FLOORS SERVERS POOL_CONFIG POOL_MAX_CONNECTIONS POOL_MAX_QUERIES; do
    [ -n "${!setting:-}" ] && COMMAND_LINE="$setting=\"${!setting}\" $COMMAND_LINE"
done

# The comment block at the top of this file, through its last line.
usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; }

SMOKE=0
SCENARIOS=()
for arg in "$@"; do
    case "$arg" in
        --smoke) SMOKE=1 ;;
        -h | --help) usage; exit 0 ;;
        1 | hot) SCENARIOS+=(1) ;;
        2 | rate) SCENARIOS+=(2) ;;
        3 | search) SCENARIOS+=(3) ;;
        4 | miss) SCENARIOS+=(4) ;;
        5 | memory) SCENARIOS+=(5) ;;
        6 | pair) SCENARIOS+=(6) ;;
        *) echo "unknown argument: $arg" >&2; usage >&2; exit 2 ;;
    esac
done
[ "${#SCENARIOS[@]}" -gt 0 ] || SCENARIOS=(1 2 3 4 5 6)

if [ "$SMOKE" = 1 ]; then
    DURATION=${DURATION:-2}
    MEM_STAGES=${MEM_STAGES:-"10000 50000"}
fi
DURATION=${DURATION:-10}
MEM_STAGES=${MEM_STAGES:-"100000 1000000"}
LATENCY_QPS=${LATENCY_QPS:-50000}
ROUNDS=${ROUNDS:-1}
FIXED_QPS=${FIXED_QPS:-"20000 2000"}
FLOORS=${FLOORS-"blocking reactor"}
PAIR_FLOORS=${PAIR_FLOORS-"forward forward-blocking"}
PAIR_RATE=${PAIR_RATE:-10000}
PAIR_STALL=${PAIR_STALL:-0}
MISS_RATES=${MISS_RATES:-"2000 5000 10000"}
MISS_QTYPES=${MISS_QTYPES:-"A TXT"}
POOL_CONFIG=${POOL_CONFIG:-auto}
POOL_MAX_QUERIES=${POOL_MAX_QUERIES:-0}
POOL_MAX_CONNECTIONS=${POOL_MAX_CONNECTIONS:-8}
POOL_USED=0
PORT=${BENCH_PORT:-10053}
NODECACHE=${NODECACHE:-}
DEFAULT_SERVERS="ours unbound dnsdist dnsmasq"
[ -n "$NODECACHE" ] && DEFAULT_SERVERS="$DEFAULT_SERVERS nodecache"
read -r -a SERVER_LIST <<<"${SERVERS:-$DEFAULT_SERVERS}"

# Addresses: the authoritative upstream, the dnsmasq-over-TCP upstream of scenario 4, the server
# under test. Distinct loopback addresses keep `ss` filters and logs unambiguous.
KNOT_IP=127.0.1.1
DNSMASQ_UP_IP=127.0.1.2
SUT_IP=127.0.2.1
SERVER_CPU=0
LOAD_CPU=1

# TTL caps. Every caching server runs with ours': answers kept at most max_ttl (mode_max_ttl),
# NXDOMAIN and NODATA at most DENIAL_TTL, our default zones[].cache.denial_ttl (src/config/mod.rs)
# and node-cache's `denial 9984 5`. A peer left at its own default would keep negative answers
# longer (dnsdist's maxNegativeTTL is 3600 s) and ask its upstream less.
DENIAL_TTL=5

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- setup

install_packages() {
    local packages=()
    need() { command -v "$1" >/dev/null 2>&1 || packages+=("$2"); }
    need dnsperf dnsperf
    need knotd knot
    need unbound unbound
    need dnsdist dnsdist
    need dnsmasq dnsmasq-base
    need ss iproute2
    need taskset util-linux
    need python3 python3
    [ "${#packages[@]}" -eq 0 ] && return
    [ "$(id -u)" -eq 0 ] || die "missing packages (run as root to install): ${packages[*]}"
    log "installing ${packages[*]}"
    apt-get update -qq
    # Debian starts packaged daemons on install; policy-rc.d may forbid it, and they are stopped
    # below either way, since they would hold port 53 and CPU during the runs.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
    for unit in knot unbound dnsdist; do
        systemctl stop "$unit" >/dev/null 2>&1 || true
    done
}

build() {
    log "building nodelocal-dns and the load generator (release)"
    (cd "$REPO" && cargo build --release --locked --bin nodelocal-dns >&2)
    local target=${CARGO_TARGET_DIR:-$REPO/target}
    local loadgen
    loadgen=$(cd "$REPO" && cargo bench --locked --bench loadgen --no-run 2>&1 |
        sed -n 's/.*Executable benches\/loadgen.rs (\(.*\))/\1/p' | tail -1)
    [ -x "$loadgen" ] || die "cargo bench --bench loadgen --no-run printed no executable"
    local floor
    floor=$(cd "$REPO" && cargo bench --locked --bench floor --no-run 2>&1 |
        sed -n 's/.*Executable benches\/floor.rs (\(.*\))/\1/p' | tail -1)
    [ -x "$floor" ] || die "cargo bench --bench floor --no-run printed no executable"
    # Copies: another build on a shared target directory must not swap binaries mid-run.
    mkdir -p "$WORK/bin"
    cp "$target/release/nodelocal-dns" "$WORK/bin/nodelocal-dns"
    cp "$loadgen" "$WORK/bin/loadgen"
    cp "$floor" "$WORK/bin/floor"
    OURS="$WORK/bin/nodelocal-dns"
    LOADGEN="$WORK/bin/loadgen"
    FLOOR="$WORK/bin/floor"
}

# ---------------------------------------------------------------- processes

STARTED=()
cleanup() {
    local pid
    for pid in "${STARTED[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${STARTED[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ "${KEEP_WORK:-0}" = 1 ]; then
        log "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}

# start NAME CPU|- COMMAND...: runs COMMAND in the background (pinned when CPU is given), logs to
# $WORK/NAME.log, sets PID. taskset execs the command, so PID is the server's own.
start() {
    local name=$1 cpu=$2
    shift 2
    if [ "$cpu" = - ]; then
        "$@" >>"$WORK/$name.log" 2>&1 &
    else
        taskset -c "$cpu" "$@" >>"$WORK/$name.log" 2>&1 &
    fi
    PID=$!
    STARTED+=("$PID")
}

stop() {
    local pid=$1
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    local kept=()
    for p in "${STARTED[@]}"; do [ "$p" = "$pid" ] || kept+=("$p"); done
    STARTED=("${kept[@]+"${kept[@]}"}")
}

# wait_ready NAME IP PID [QNAME]: until IP:PORT answers QNAME/A with NOERROR (dnsdist drops queries
# until its backend's first health check passes), or fail after 20 s.
wait_ready() {
    local name=$1 ip=$2 pid=$3 qname=${4:-ns.test}
    local i
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || { tail -20 "$WORK/$name.log" >&2; die "$name exited during startup"; }
        if python3 - "$ip" "$PORT" "$qname" <<'EOF'; then return 0; fi
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
        sleep 0.2
    done
    tail -20 "$WORK/$name.log" >&2
    die "$name did not answer on $ip:$PORT"
}

cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
# The same, with the children it has waited for (dnsmasq forks one per TCP connection).
cpu_ticks_with_children() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13 + $14 + $15}'; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# Times the process's threads went to sleep and were woken (voluntary context switches), all
# threads alive now: a count, not a time, so steal does not inflate it (how the queries bunch
# on arrival still moves it).
wakeups() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^voluntary_ctxt_switches:/ {n += $2} END {print n + 0}'; }

# ---------------------------------------------------------------- upstreams

start_knot() {
    local dir=$WORK/knot
    mkdir -p "$dir/db"
    python3 "$BENCH_DIR/gen_zones.py" "$dir"
    cp "$dir/hot.txt" "$dir/positive.txt" "$dir/search.txt" "$WORK/"
    cat >"$dir/knot.conf" <<EOF
server:
    listen: $KNOT_IP@$PORT
    rundir: $dir
    udp-workers: 2
    tcp-workers: 2
    background-workers: 1
log:
  - target: stderr
    any: warning
database:
    storage: $dir/db
template:
  - id: default
    storage: $dir
    file: "%s.zone"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
    semantic-checks: off
zone:
  - domain: cluster.local
  - domain: test
EOF
    # Unpinned: the upstream only works on misses, and its CPU is not what is measured.
    start knot - knotd -c "$dir/knot.conf"
    KNOT_PID=$PID
    wait_ready knot "$KNOT_IP" "$KNOT_PID"
}

# The kube-dns stand-in of failure 1 (docs/design.md): Debian's dnsmasq with kube-dns's flags, forwarding to knotd.
# It serves at most 20 TCP connections (compiled in), one query at a time each.
start_dnsmasq_upstream() {
    start dnsmasq-upstream - dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts \
        --bind-interfaces --listen-address="$DNSMASQ_UP_IP" --port="$PORT" \
        --server="$KNOT_IP#$PORT" --no-negcache --cache-size=1000 --pid-file= --user=root \
        --log-facility=-
    DNSMASQ_UP_PID=$PID
    wait_ready dnsmasq-upstream "$DNSMASQ_UP_IP" "$DNSMASQ_UP_PID"
}

# ---------------------------------------------------------------- servers under test

# mode_max_ttl MODE: the cap on answers' TTLs in seconds for MODE (see start_server): 30 s like
# node-cache's `cache 30`, 1 h for the memory fill.
mode_max_ttl() {
    if [ "$1" = memory ]; then echo 3600; else echo 30; fi
}

# caps_note MODE [dnsmasq]: the TTL caps of MODE, as the result files state them; with `dnsmasq`
# when dnsmasq is among the servers measured, whose negative answers are capped like its others.
caps_note() {
    local max_ttl
    max_ttl=$(mode_max_ttl "$1")
    printf 'every caching server runs with the same TTL caps: answers kept at most %s s, NXDOMAIN and NODATA at most %s s' "$max_ttl" "$DENIAL_TTL"
    [ "${2:-}" = dnsmasq ] && [[ " ${SERVER_LIST[*]} " == *" dnsmasq "* ]] && printf ' (but dnsmasq, which has one cap for both, --max-cache-ttl: it keeps negative answers up to %s s)' "$max_ttl"
    echo
}

# start_server NAME MODE: MODE is cache (knotd upstream), tcp (dnsmasq upstream over TCP; ours and
# node-cache only), forward (knotd over TCP; dnsdist without a cache) or memory (caches sized for
# the largest MEM_STAGES); TTL caps from mode_max_ttl and DENIAL_TTL. Sets SUT_PID.
start_server() {
    local name=$1 mode=$2 dir=$WORK/$1-$2
    mkdir -p "$dir"
    local upstream_ip=$KNOT_IP capacity=100000 max_ttl
    max_ttl=$(mode_max_ttl "$mode")
    [ "$mode" = tcp ] && upstream_ip=$DNSMASQ_UP_IP
    if [ "$mode" = memory ]; then
        local largest
        largest=$(tr ' ' '\n' <<<"$MEM_STAGES" | sort -n | tail -1)
        capacity=$((largest + largest / 10 + 1000))
    fi
    case "$name" in
        ours) start_ours "$dir" "$mode" "$upstream_ip" "$capacity" "$max_ttl" ;;
        unbound) start_unbound "$dir" "$upstream_ip" "$capacity" "$max_ttl" ;;
        dnsdist) start_dnsdist "$dir" "$upstream_ip" "$capacity" "$max_ttl" "$mode" ;;
        dnsmasq) start_dnsmasq "$dir" "$upstream_ip" "$capacity" "$max_ttl" "$mode" ;;
        nodecache) start_nodecache "$dir" "$mode" "$upstream_ip" "$capacity" "$max_ttl" ;;
        floor-*) start floor "$SERVER_CPU" "$FLOOR" --listen "$SUT_IP:$PORT" --loop "${name#floor-}" \
            --upstream "$upstream_ip:$PORT" ;;
        *) die "unknown server $name (known: ours unbound dnsdist dnsmasq nodecache)" ;;
    esac
    SUT_PID=$PID
    wait_ready "$name" "$SUT_IP" "$SUT_PID"
}

ours_config() {
    local mode=$1 upstream_ip=$2 capacity=$3 max_ttl=$4 pool=$5
    cat <<EOF
listen: ["$SUT_IP:$PORT"]
workers: 1
resolv_conf: $WORK/resolv.conf
cache:
  capacity: $capacity
zones:
  - name: .
    upstreams: ["$upstream_ip:$PORT"]
    cache:
      success_ttl: ${max_ttl}s
      denial_ttl: ${DENIAL_TTL}s
EOF
    if [ "$mode" = tcp ] || [ "$mode" = forward ]; then
        echo "    transport: tcp"
        if [ "$pool" = 1 ]; then
            cat <<EOF
    pool:
      max_connections: $POOL_MAX_CONNECTIONS
      max_inflight: 32
      idle_timeout: 2s
      max_queries_per_connection: $POOL_MAX_QUERIES
      queue:
        capacity: 2048
        timeout: 1s
EOF
        fi
    fi
}

# Decides once whether scenario 4's config carries the pool block (POOL_CONFIG), into POOL_USED.
decide_pool() {
    case "$POOL_CONFIG" in
        1) POOL_USED=1 ;;
        0) POOL_USED=0 ;;
        auto)
            mkdir -p "$WORK/pool-probe"
            ours_config tcp "$DNSMASQ_UP_IP" 1000 30 1 >"$WORK/pool-probe/generated.yaml"
            if "$OURS" check-config "$WORK/pool-probe/generated.yaml" >/dev/null 2>&1; then POOL_USED=1; else
                POOL_USED=0
                log "this build rejects the pool block; scenario 4 runs without it (POOL_CONFIG=1 to insist)"
            fi
            ;;
        *) die "POOL_CONFIG must be 0, 1 or auto" ;;
    esac
}

start_ours() {
    local dir=$1 mode=$2 upstream_ip=$3 capacity=$4 max_ttl=$5
    echo "nameserver $KNOT_IP" >"$WORK/resolv.conf"
    ours_config "$mode" "$upstream_ip" "$capacity" "$max_ttl" "$POOL_USED" >"$dir/generated.yaml"
    local checked
    checked=$("$OURS" check-config "$dir/generated.yaml" 2>&1) || die "check-config rejected $dir/generated.yaml: $checked"
    start ours "$SERVER_CPU" "$OURS" run --config "$dir/generated.yaml" --log-level warn
}

start_unbound() {
    local dir=$1 upstream_ip=$2 capacity=$3 max_ttl=$4
    # Unbound's caches are sized in bytes: ~300 B per message entry, ~600 B per RRset, generously.
    cat >"$dir/unbound.conf" <<EOF
server:
    interface: $SUT_IP@$PORT
    port: $PORT
    num-threads: 1
    so-reuseport: no
    do-ip6: no
    do-daemonize: no
    chroot: ""
    username: ""
    directory: "$dir"
    pidfile: "$dir/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 0
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    module-config: "iterator"
    local-zone: "test." nodefault
    msg-cache-size: $((capacity * 1024 / 1000 + 4))k
    rrset-cache-size: $((capacity * 2048 / 1000 + 4))k
    cache-max-ttl: $max_ttl
    cache-max-negative-ttl: $DENIAL_TTL
    prefetch: yes
    so-rcvbuf: 4m
forward-zone:
    name: "."
    forward-addr: $upstream_ip@$PORT
EOF
    start unbound "$SERVER_CPU" unbound -d -c "$dir/unbound.conf"
}

start_dnsdist() {
    local dir=$1 upstream_ip=$2 capacity=$3 max_ttl=$4 mode=$5
    if [ "$mode" = forward ]; then
        # Scenario 6: forwarding only, over TCP like ours, no packet cache.
        cat >"$dir/dnsdist.conf" <<EOF
setSecurityPollSuffix("")
setLocal("$SUT_IP:$PORT")
setACL({"127.0.0.0/8"})
newServer({address="$upstream_ip:$PORT", tcpOnly=true, checkName="test.", checkType="SOA", checkInterval=5})
EOF
    else
        cat >"$dir/dnsdist.conf" <<EOF
setSecurityPollSuffix("")
setLocal("$SUT_IP:$PORT")
setACL({"127.0.0.0/8"})
newServer({address="$upstream_ip:$PORT", checkName="test.", checkType="SOA", checkInterval=5})
pc = newPacketCache($capacity, {maxTTL=$max_ttl, maxNegativeTTL=$DENIAL_TTL})
getPool(""):setCache(pc)
EOF
    fi
    start dnsdist "$SERVER_CPU" dnsdist --supervised --disable-syslog -C "$dir/dnsdist.conf"
}

start_dnsmasq() {
    local dir=$1 upstream_ip=$2 capacity=$3 max_ttl=$4 mode=$5 forward_max=150
    # dnsmasq has no separate cap for negative answers: --max-cache-ttl caps every entry, so its
    # NXDOMAIN and NODATA live up to max_ttl (caps_note says so in the results). --neg-ttl is
    # only for negative answers without an SOA, which knotd never sends.
    # The memory fill keeps 200 misses outstanding; dnsmasq drops those beyond its default 150.
    [ "$mode" = memory ] && forward_max=1000
    start dnsmasq "$SERVER_CPU" dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts \
        --bind-interfaces --listen-address="$SUT_IP" --port="$PORT" --server="$upstream_ip#$PORT" \
        --cache-size="$capacity" --max-cache-ttl="$max_ttl" --dns-forward-max="$forward_max" \
        --pid-file= --user=root --log-facility=-
}

# node-cache renders -basecorefile into -conf; this base needs no substitution. Its shape follows
# the node-cache manifest: cache success 30 / denial 5, forward with force_tcp in the TCP scenario.
start_nodecache() {
    local dir=$1 mode=$2 upstream_ip=$3 capacity=$4 max_ttl=$5 forward="forward . $3:$PORT"
    [ "$mode" = tcp ] && forward="$forward {"$'\n        force_tcp\n        expire 1s\n    }'
    cat >"$dir/Corefile.base" <<EOF
.:$PORT {
    errors
    cache {
        success $capacity $max_ttl
        denial 9984 $DENIAL_TTL
    }
    bind $SUT_IP
    $forward
}
EOF
    # GOMAXPROCS=1: one worker thread, like every other server here.
    start nodecache "$SERVER_CPU" env GOMAXPROCS=1 KUBE_DNS_UPSTREAM_SERVICE_HOST="$upstream_ip" "$NODECACHE" \
        -localip "$SUT_IP" -dns.port "$PORT" -basecorefile "$dir/Corefile.base" -conf "$dir/Corefile" \
        -upstreamsvc kube-dns-upstream -setupinterface=false -setupiptables=false -skipteardown \
        -metrics-listen-address "$SUT_IP:9353" -pidfile "$dir/node-cache.pid"
}

# ---------------------------------------------------------------- load

# dnsperf OUT ARGS...: dnsperf against the server under test, pinned to the load CPU.
dnsperf_run() {
    local out=$1
    shift
    taskset -c "$LOAD_CPU" dnsperf -s "$SUT_IP" -p "$PORT" "$@" >"$out" 2>&1 ||
        { cat "$out" >&2; die "dnsperf failed"; }
}
# dp_sent, dp_completed, dp_lost, dp_qps, dp_avg_ms, dp_rcode
# shellcheck source=benches/dnsperf.sh
. "$BENCH_DIR/dnsperf.sh"

loadgen_run() {
    local out=$1
    shift
    taskset -c "$LOAD_CPU" "$LOADGEN" --server "$SUT_IP:$PORT" "$@" >"$out" 2>&1 ||
        { cat "$out" >&2; die "loadgen failed"; }
}
lg() { tr ' ' '\n' <"$1" | awk -F= -v k="$2" '$1 == k {print $2}'; }

pct() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f %%", 100 * a / b; else print "-"}'; }
# CPU time the hypervisor gave to other guests (8th field of /proc/stat's cpu line), all cores.
steal_ticks() { awk '/^cpu / {print $9}' /proc/stat; }
cpu_seconds() { awk -v t="$1" -v hz="$CLK_TCK" 'BEGIN {printf "%.1f", t / hz}'; }
# us_per_query TICKS QUERIES: server CPU time in microseconds per query.
us_per_query() { awk -v t="$1" -v q="$2" -v hz="$CLK_TCK" 'BEGIN {if (q > 0) printf "%.1f", t * 1e6 / hz / q; else print "-"}'; }
mb() { awk -v k="$1" 'BEGIN {printf "%.1f MB", k / 1024}'; }
# median VALUE...: the middle value (the lower of the two middle ones for an even count).
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
# figure VALUE...: one round's value as it is; several rounds' median and range.
figure() {
    if [ "$#" -eq 1 ]; then echo "$1"; return; fi
    printf '%s (%s)' "$(median "$@")" "$(printf '%s\n' "$@" | sort -g | awk 'NR == 1 {lo = $1} {hi = $1} END {print lo "–" hi}')"
}

# Warms the cache with one pass over a names file.
warm() { dnsperf_run "$WORK/warm.out" -d "$1" -n 1 -c 4 -q 200; }

# cached_point SERVER NAMES OUT [DNSPERF_ARG...]: starts SERVER in cache mode, warms it with the
# NAMES file, asks NAMES for DURATION (dnsperf -c 8 -q 500 plus the arguments given, output in
# OUT), and sets CPU_TICKS to the server's CPU time during that run and WAKEUPS to its threads'
# wake-ups (see wakeups). The server keeps running
# (SUT_PID) for what the caller measures next.
cached_point() {
    local server=$1 names=$2 out=$3 t0
    shift 3
    start_server "$server" cache
    warm "$names"
    t0=$(cpu_ticks "$SUT_PID")
    local w0
    w0=$(wakeups "$SUT_PID")
    dnsperf_run "$out" -d "$names" -l "$DURATION" -c 8 -q 500 "$@"
    CPU_TICKS=$(($(cpu_ticks "$SUT_PID") - t0))
    WAKEUPS=$(($(wakeups "$SUT_PID") - w0))
}

# ---------------------------------------------------------------- report

version_of() {
    case "$1" in
        ours) echo "nodelocal-dns $(cd "$REPO" && git describe --always --dirty 2>/dev/null || echo unknown)" ;;
        unbound) unbound -V | head -1 | sed 's/Version/unbound/' ;;
        dnsdist) dnsdist --version | head -1 | cut -d' ' -f1,2 ;;
        dnsmasq) dnsmasq --version | head -1 | awk '{print "dnsmasq", $3}' ;;
        nodecache) echo "node-cache ($NODECACHE)" ;;
        floor-*) echo "$1 (benches/floor.rs)" ;;
    esac
}

ROWS=()
row() { ROWS+=("| $(IFS='|'; echo "$*" | sed 's/|/ | /g') |"); }

# report SCENARIO_ID TITLE NOTE HEADER...: prints the table and writes it under benches/results/.
report() {
    local id=$1 title=$2 note=$3
    shift 3
    local file="$BENCH_DIR/results/$STAMP-$id.md"
    [ "$SMOKE" = 1 ] && file="$BENCH_DIR/results/$STAMP-smoke-$id.md"
    local versions="" s
    for s in "${RAN[@]}"; do versions="$versions$(version_of "$s"); "; done
    {
        echo "## Scenario ${id%%-*}: $title"
        echo
        echo "- command: \`DURATION=$DURATION $COMMAND_LINE\`$([ "$SMOKE" = 1 ] && echo ' (smoke run: short points, noisy figures)')"
        echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "- machine: $CPU_MODEL, $(nproc) cores, kernel $(uname -r)"
        echo "- servers: ${versions%; }; upstream $(knotd --version | head -1); load: $(dnsperf -h 2>&1 | grep -m1 Version | sed 's/Version/dnsperf/'), benches/loadgen.rs"
        echo "- each server pinned to CPU $SERVER_CPU with one worker thread, load generator pinned to CPU $LOAD_CPU; $DURATION s per point"
        [ -n "$note" ] && echo "- $note"
        echo "- CPU time stolen by the hypervisor during this scenario (all servers, both cores): $(cpu_seconds $(($(steal_ticks) - STEAL_AT_START))) s; runs with seconds of steal are not comparable with quiet ones"
        echo
        echo "| $(IFS='|'; echo "$*" | sed 's/|/ | /g') |"
        echo "|$(for _ in "$@"; do printf -- '---|'; done)"
        printf '%s\n' "${ROWS[@]}"
    } | tee "$file"
    echo
    log "written $file"
    ROWS=()
}

# ---------------------------------------------------------------- scenarios

scenario_hot() {
    local s r out=$WORK/s1
    # Each figure of each server, one word per round. The servers take turns round by round, so
    # a burst of steal time lands on one round of one server, not on all of its figures.
    local -A qps=() us=() rss=() p50=() p99=() p999=() lost=() lag=() steal=()
    for ((r = 1; r <= ROUNDS; r++)); do
        for s in "${SERVER_LIST[@]}"; do
            log "1 cache-hot: $s (round $r of $ROUNDS)"
            local stolen_before
            stolen_before=$(steal_ticks)
            cached_point "$s" "$WORK/hot.txt" "$out-$s.dp"
            rss[$s]+="$(rss_kb "$SUT_PID") "
            loadgen_run "$out-$s.lg" --names "$WORK/hot.txt" --rate "$LATENCY_QPS" --duration "$DURATION"
            stop "$SUT_PID"
            qps[$s]+="$(dp_qps "$out-$s.dp") "
            us[$s]+="$(us_per_query "$CPU_TICKS" "$(dp_completed "$out-$s.dp")") "
            p50[$s]+="$(lg "$out-$s.lg" p50_us) "
            p99[$s]+="$(lg "$out-$s.lg" p99_us) "
            p999[$s]+="$(lg "$out-$s.lg" p999_us) "
            lost[$s]+="$(pct $(($(lg "$out-$s.lg" lost) + $(lg "$out-$s.lg" late))) "$(lg "$out-$s.lg" sent)" | cut -d' ' -f1) "
            lag[$s]+="$(lg "$out-$s.lg" max_lag_us) "
            steal[$s]=$((${steal[$s]:-0} + $(steal_ticks) - stolen_before))
        done
    done
    for s in "${SERVER_LIST[@]}"; do
        # Word splitting of the per-round lists is intended.
        # shellcheck disable=SC2086
        row "$s" "$(figure ${qps[$s]})" "$(figure ${us[$s]})" "$(mb "$(median ${rss[$s]})")" \
            "$(median ${p50[$s]})" "$(median ${p99[$s]})" "$(median ${p999[$s]})" \
            "$(median ${lost[$s]}) %" "$(median ${lag[$s]})" "$(cpu_seconds "${steal[$s]}")"
    done
    local rounds_note=""
    [ "$ROUNDS" -gt 1 ] && rounds_note="; $ROUNDS rounds, the servers in turn: each figure is the median of the rounds, max QPS and CPU with their range"
    report 1-cache-hot "cache-hot max QPS, CPU per query, latency at $LATENCY_QPS QPS" \
        "$(wc -l <"$WORK/hot.txt") queries (services, hosts, CNAMEs; A and AAAA) warmed once, then asked again and again; max QPS by dnsperf -c 8 -q 500; CPU from /proc/PID/stat utime+stime; latency by loadgen at a fixed $LATENCY_QPS QPS (max lag = how far loadgen fell behind its schedule); $(caps_note cache dnsmasq)$rounds_note" \
        server "max QPS" "CPU µs/query" RSS "p50 µs @${LATENCY_QPS}" "p99 µs" "p99.9 µs" lost "loadgen max lag µs" "steal s"
}

# Scenario 2 asks two sets: the cache-hot set (most of its names have a NODATA half, which holds
# the coherent pair for 5 s, so both halves are fetched again every few seconds) and its positive
# pairs (A and AAAA both present, 30 s), where a server does little but answer from its cache.
# The floors answer without a cache; they run on the first set only, whose names they never read.
scenario_rate() {
    local s r rate set out=$WORK/s2
    local -A us=() wake=() qps=() avg=() lost=()
    local floors=() name
    for name in $FLOORS; do floors+=("floor-$name"); done
    for ((r = 1; r <= ROUNDS; r++)); do
        for rate in $FIXED_QPS; do
            for set in hot positive; do
                for s in "${SERVER_LIST[@]}" "${floors[@]}"; do
                    [ "$set" = positive ] && [ "${s#floor-}" != "$s" ] && continue
                    log "2 fixed rate: $s, $set set at $rate QPS (round $r of $ROUNDS)"
                    local dp=$out-$s-$set-$rate.dp key="$s|$set|$rate"
                    cached_point "$s" "$WORK/$set.txt" "$dp" -Q "$rate"
                    stop "$SUT_PID"
                    local done
                    done=$(dp_completed "$dp")
                    us[$key]+="$(us_per_query "$CPU_TICKS" "$done") "
                    wake[$key]+="$(awk -v w="$WAKEUPS" -v q="$done" 'BEGIN {if (q > 0) printf "%.2f", w / q; else print "-"}') "
                    qps[$key]+="$(dp_qps "$dp") "
                    avg[$key]+="$(dp_avg_ms "$dp") "
                    lost[$key]+="$(pct "$(dp_lost "$dp")" "$(dp_sent "$dp")" | cut -d' ' -f1) "
                done
            done
        done
    done
    for rate in $FIXED_QPS; do
        for set in hot positive; do
            for s in "${SERVER_LIST[@]}" "${floors[@]}"; do
                local key="$s|$set|$rate"
                [ -n "${us[$key]:-}" ] || continue
                # Word splitting of the per-round lists is intended.
                # shellcheck disable=SC2086
                row "$s" "$set" "$rate" "$(median ${qps[$key]})" "$(figure ${us[$key]})" \
                    "$(median ${wake[$key]})" "$(median ${avg[$key]})" "$(median ${lost[$key]}) %"
            done
        done
    done
    local rounds_note=""
    [ "$ROUNDS" -gt 1 ] && rounds_note="; $ROUNDS rounds, the servers in turn: each figure is the median of the rounds, CPU with its range"
    report 2-fixed-rate "CPU per query at fixed rates ($FIXED_QPS QPS)" \
        "dnsperf -Q RATE over the cache-hot set of scenario 1 (hot) and over its names that have both an A and an AAAA (positive); CPU from /proc/PID/stat, wake-ups are the server threads' voluntary context switches per query; floor-* answer every query with itself and no cache (benches/floor.rs): at a node's real rates a query costs mostly its wake-up, and no server woken once per query costs less than the floor; $(caps_note cache dnsmasq)$rounds_note" \
        server set "offered QPS" "achieved QPS" "CPU µs/query" "wake-ups/query" "avg latency ms" lost
}

scenario_search() {
    local s out=$WORK/s3
    for s in "${SERVER_LIST[@]}"; do
        log "3 search path: $s"
        cached_point "$s" "$WORK/search.txt" "$out-$s.dp"
        stop "$SUT_PID"
        local done
        done=$(dp_completed "$out-$s.dp")
        row "$s" "$(dp_qps "$out-$s.dp")" "$(us_per_query "$CPU_TICKS" "$done")" \
            "$(pct "$(dp_rcode "$out-$s.dp" NXDOMAIN)" "$done")" "$(pct "$(dp_rcode "$out-$s.dp" SERVFAIL)" "$done")" \
            "$(dp_avg_ms "$out-$s.dp")" "$(pct "$(dp_lost "$out-$s.dp")" "$(dp_sent "$out-$s.dp")")"
    done
    report 3-search-path "search-path mix (ndots:5)" \
        "each of $(($(wc -l <"$WORK/search.txt") / 8)) names asked as a pod with ndots:5 would: 3 search-list expansions (NXDOMAIN, cached 5 s by SOA MINIMUM) then the name, for A and AAAA; max QPS by dnsperf -c 8 -q 500; $(caps_note cache dnsmasq)" \
        server "max QPS" "CPU µs/query" NXDOMAIN SERVFAIL "avg latency ms" lost
}

# Samples the peak of established TCP connections to the dnsmasq upstream into FILE until killed.
sample_connections() {
    local file=$1 peak=0 n
    while :; do
        n=$(ss -Htn state established dst "$DNSMASQ_UP_IP:$PORT" | wc -l)
        [ "$n" -gt "$peak" ] && peak=$n && echo "$peak" >"$file"
        sleep 0.05
    done
}

scenario_miss() {
    local s rate out=$WORK/s4 servers=()
    for s in "${SERVER_LIST[@]}"; do
        case "$s" in ours | nodecache) servers+=("$s") ;; *) log "4 miss stream: skipping $s (ours and node-cache only)" ;; esac
    done
    [ "${#servers[@]}" -gt 0 ] || { log "4 miss stream: no server to run"; return; }
    RAN=("${servers[@]}")
    decide_pool
    local qtype point
    for s in "${servers[@]}"; do
        for qtype in $MISS_QTYPES; do
            for rate in $MISS_RATES; do
                log "4 miss stream: $s, $qtype at $rate QPS"
                point=$out-$s-$qtype-$rate
                # A fresh upstream per point, so that no point inherits the last one's state:
                # one dnsmasq kept running served consecutive 10 s points at 10 000 QPS with 0,
                # 3.5 and 9.9 % SERVFAIL, and 0 % again once restarted (2026-11-23, by hand).
                start_dnsmasq_upstream
                start_server "$s" tcp
                seq 1 $((rate * DURATION)) |
                    awk -v p="$s-$rate-$RANDOM" -v t="$qtype" '{print "m" $1 "-" p ".miss.test " t}' >"$point.txt"
                echo 0 >"$point.conns"
                sample_connections "$point.conns" &
                local sampler=$!
                local ours0 up0 ours1 up1
                ours0=$(cpu_ticks "$SUT_PID")
                up0=$(($(cpu_ticks_with_children "$DNSMASQ_UP_PID") + $(cpu_ticks "$KNOT_PID")))
                dnsperf_run "$point.dp" -d "$point.txt" -n 1 -l "$DURATION" -Q "$rate" -c 8 -q 20000 -t 5
                kill "$sampler" 2>/dev/null || true
                wait "$sampler" 2>/dev/null || true
                ours1=$(cpu_ticks "$SUT_PID")
                stop "$SUT_PID"
                # dnsmasq's last children are counted once it has reaped them.
                sleep 0.2
                up1=$(($(cpu_ticks_with_children "$DNSMASQ_UP_PID") + $(cpu_ticks "$KNOT_PID")))
                stop "$DNSMASQ_UP_PID"
                local sent
                sent=$(dp_sent "$point.dp")
                row "$s" "$qtype" "$rate" "$(dp_qps "$point.dp")" "$(pct "$(dp_lost "$point.dp")" "$sent")" \
                    "$(pct "$(dp_rcode "$point.dp" SERVFAIL)" "$sent")" "$(dp_avg_ms "$point.dp")" \
                    "$(cat "$point.conns")" "$(cpu_seconds $((ours1 - ours0)))" "$(cpu_seconds $((up1 - up0)))"
            done
        done
    done
    local pool_note="our pool block: max_connections $POOL_MAX_CONNECTIONS, max_inflight 32, idle_timeout 2s, max_queries_per_connection $POOL_MAX_QUERIES, queue 2048 / 1s"
    [ "$POOL_USED" = 1 ] || pool_note="our config without a pool block (POOL_CONFIG=0 or not supported by this build)"
    report 4-miss-stream "distinct cache misses through a dnsmasq-over-TCP upstream" \
        "dnsmasq 2.90 --no-negcache --cache-size=1000 (at most 20 TCP connections, one query at a time each) on $DNSMASQ_UP_IP in front of knotd, restarted for every point; servers forward with transport tcp; distinct existing names (*.miss.test: an A record, no AAAA or TXT) at dnsperf -Q RATE, asked for A (ours fetches A and AAAA together: two upstream queries per miss) or TXT (one); peak connections sampled every 50 ms with ss; CPU seconds over the point from /proc/PID/stat (dnsmasq with its reaped per-connection children; $DURATION s on $(nproc) cores is $((DURATION * $(nproc))) CPU s in all); $(caps_note tcp); $pool_note" \
        server "query type" "offered QPS" "achieved QPS" lost SERVFAIL "avg latency ms" "peak upstream TCP conns" "server CPU s" "dnsmasq + knotd CPU s"
}

# Sum of coredns_forward_requests_total on our /metrics: the queries we sent upstream.
ours_forwarded() {
    python3 -c '
import urllib.request
text = urllib.request.urlopen("http://127.0.0.1:9253/metrics", timeout=5).read().decode()
lines = [l for l in text.splitlines() if l.startswith("coredns_forward_requests_total")]
print(int(sum(float(l.rsplit(" ", 1)[1]) for l in lines)))'
}

# pair_point SERVER MODE UPSTREAM-LABEL LOAD: one PAIR_RATE point of distinct names, each asked A
# and then AAAA as a stub resolver does; one row. LOAD `paced` is dnsperf, which spaces the AAAA
# 1 / rate after its A; `together` is benches/loadgen.rs --burst 2, which sends both back to back
# from one socket, as glibc, musl and Go do.
pair_point() {
    local s=$1 mode=$2 upstream=$3 load=$4 point=$WORK/s6-$1-$2-$4
    [ "$mode" = tcp ] && start_dnsmasq_upstream
    start_server "$s" "$mode"
    seq 1 $((PAIR_RATE * DURATION / 2)) |
        awk -v p="$s-$mode-$load-$RANDOM" '{print "p" $1 "-" p ".miss.test A"; print "p" $1 "-" p ".miss.test AAAA"}' >"$point.txt"
    local before after forwarded0=0 forwarded1 sent done qps lost servfail
    [ "$s" = ours ] && forwarded0=$(ours_forwarded)
    before=$(cpu_ticks "$SUT_PID")
    if [ "$mode" = tcp ] && [ "$PAIR_STALL" != 0 ]; then
        (sleep 1 && kill -STOP "$DNSMASQ_UP_PID" && sleep "$PAIR_STALL" && kill -CONT "$DNSMASQ_UP_PID") &
    fi
    if [ "$load" = paced ]; then
        dnsperf_run "$point.dp" -d "$point.txt" -n 1 -l "$DURATION" -Q "$PAIR_RATE" -c 8 -q 20000 -t 5
        sent=$(dp_sent "$point.dp")
        done=$(dp_completed "$point.dp")
        qps=$(dp_qps "$point.dp")
        lost=$(dp_lost "$point.dp")
        servfail=$(dp_rcode "$point.dp" SERVFAIL)
    else
        loadgen_run "$point.lg" --names "$point.txt" --rate "$PAIR_RATE" --duration "$DURATION" \
            --burst 2 --sockets 8 --timeout 5
        sent=$(lg "$point.lg" sent)
        done=$(lg "$point.lg" answered)
        qps=$(lg "$point.lg" achieved_qps)
        lost=$(lg "$point.lg" lost)
        servfail=$(lg "$point.lg" servfail)
    fi
    after=$(cpu_ticks "$SUT_PID")
    # dnsdist forwards every query it answers (no cache here); ours counts what it sent.
    forwarded1=$done
    [ "$s" = ours ] && forwarded1=$(($(ours_forwarded) - forwarded0))
    stop "$SUT_PID"
    [ "$mode" = tcp ] && stop "$DNSMASQ_UP_PID"
    row "$s" "$upstream" "$load" "$PAIR_RATE" "$qps" "$(pct "$lost" "$sent")" "$(pct "$servfail" "$sent")" \
        "$(awk -v f="$forwarded1" -v n="$done" 'BEGIN {if (n > 0) printf "%.2f", 2 * f / n; else print "-"}')" \
        "$(cpu_seconds $((after - before)))" "$(us_per_query $((after - before)) "$forwarded1")"
}

scenario_pair() {
    local s
    decide_pool
    for s in "${SERVER_LIST[@]}"; do
        case "$s" in
            ours)
                log "6 pair stream: ours through dnsmasq over TCP"
                pair_point ours tcp "dnsmasq (TCP) -> knotd" paced
                log "6 pair stream: ours to knotd over TCP"
                pair_point ours forward "knotd (TCP)" paced
                log "6 pair stream: ours to knotd over TCP, each pair sent together"
                pair_point ours forward "knotd (TCP)" together
                # The floor below relays over one connection; ours spreads the halves of a pair
                # over two (docs/design.md: the upstreams' TCP serves one query at a time).
                log "6 pair stream: ours to knotd over one TCP connection, each pair sent together"
                POOL_MAX_CONNECTIONS=1 pair_point ours forward "knotd (TCP, 1 connection)" together
                ;;
            dnsdist)
                log "6 pair stream: dnsdist to knotd over TCP, no cache"
                pair_point dnsdist forward "knotd (TCP)" paced
                log "6 pair stream: dnsdist to knotd over TCP, no cache, each pair sent together"
                pair_point dnsdist forward "knotd (TCP)" together
                ;;
            *) log "6 pair stream: skipping $s (ours and dnsdist only)" ;;
        esac
    done
    for s in $PAIR_FLOORS; do
        RAN+=("floor-$s")
        log "6 pair stream: floor-$s to knotd over TCP"
        pair_point "floor-$s" forward "knotd (TCP)" paced
        log "6 pair stream: floor-$s to knotd over TCP, each pair sent together"
        pair_point "floor-$s" forward "knotd (TCP)" together
    done
    report 6-pair-stream "distinct misses asked A then AAAA, as stub resolvers ask" \
        "each name (*.miss.test: an A record, no AAAA) asked for A and then AAAA at $PAIR_RATE queries a second, paced (dnsperf -Q: the AAAA 1 / rate after its A) or together (benches/loadgen.rs --burst 2: both back to back from one socket, as glibc, musl and Go ask); ours fetches both halves in one resolution (the AAAA finds the pair in flight or cached), through Debian's dnsmasq over TCP (as in scenario 4) and straight to knotd over TCP, beside dnsdist forwarding over TCP without a cache; upstream queries per name from coredns_forward_requests_total (dnsdist and the floor: one per query answered); floor-forward relays each query to one TCP connection to knotd with nothing else (benches/floor.rs), the least a forwarder over TCP costs on this machine; CPU µs per upstream query = the server's CPU over the point / its upstream queries; ours caches with its caps ($(mode_max_ttl forward) s, NXDOMAIN and NODATA $DENIAL_TTL s); dnsdist and the floors cache nothing" \
        server upstream load "offered QPS" "achieved QPS" lost SERVFAIL "upstream queries per name" "server CPU s" "CPU µs per upstream query"
}

scenario_memory() {
    local s out=$WORK/s5 stages
    read -r -a stages <<<"$MEM_STAGES"
    local total=${stages[-1]}
    seq 1 "$total" | awk '{print "f" $1 ".mem.test A"}' >"$out-names.txt"
    for s in "${SERVER_LIST[@]}"; do
        log "5 memory: $s"
        start_server "$s" memory
        sleep 1
        local idle cells=() filled=0 from=1 stage
        idle=$(rss_kb "$SUT_PID")
        cells+=("$(mb "$idle")")
        local last_rss=$idle answered=0
        for stage in "${stages[@]}"; do
            sed -n "${from},${stage}p" "$out-names.txt" >"$out-fill.txt"
            dnsperf_run "$out-$s-$stage.dp" -d "$out-fill.txt" -n 1 -c 8 -q 200 -t 5
            answered=$((answered + $(dp_rcode "$out-$s-$stage.dp" NOERROR)))
            from=$((stage + 1))
            sleep 1
            last_rss=$(rss_kb "$SUT_PID")
            cells+=("$(mb "$last_rss")")
        done
        stop "$SUT_PID"
        row "$s" "${cells[@]}" "$answered" \
            "$(awk -v a="$last_rss" -v b="$idle" -v n="$answered" 'BEGIN {if (n > 0) printf "%.0f", (a - b) * 1024 / n; else print "-"}')" \
            "$(awk -v a="$last_rss" -v n="$answered" 'BEGIN {if (n > 0) printf "%.0f", a * 1024 / n; else print "-"}')"
    done
    local headers=() stage
    for stage in "${stages[@]}"; do headers+=("RSS after $stage names"); done
    report 5-memory "memory per cached name" \
        "distinct existing names (*.mem.test A, TTL 3600) filled by dnsperf -n 1; caches sized for $total entries; bytes per entry: growth = (last RSS - idle RSS) / names answered NOERROR, total = last RSS / names (a cache allocated at startup, like dnsmasq's, shows in the idle RSS and only in the total); $(caps_note memory dnsmasq)" \
        server "RSS idle" "${headers[@]}" "names answered" "bytes/entry (growth)" "bytes/entry (total)"
}

# ---------------------------------------------------------------- main

install_packages
WORK=$(mktemp -d /tmp/nodelocal-bench.XXXXXX)
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$BENCH_DIR/results"
[ -z "$NODECACHE" ] || [ -x "$NODECACHE" ] || die "NODECACHE=$NODECACHE is not an executable"
[ "$(nproc)" -ge 2 ] || die "needs at least 2 CPUs (server on CPU $SERVER_CPU, load on CPU $LOAD_CPU)"
CLK_TCK=$(getconf CLK_TCK)
CPU_MODEL=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
STAMP=$(date +%Y-%m-%d-%H%M)
if ss -Hlun "( sport = :$PORT )" | grep -q .; then
    die "something already listens on UDP port $PORT: $(ss -Hlunp "( sport = :$PORT )" | head -1)"
fi

build
log "starting knotd on $KNOT_IP:$PORT"
start_knot
for scenario in "${SCENARIOS[@]}"; do
    RAN=("${SERVER_LIST[@]}")
    STEAL_AT_START=$(steal_ticks)
    case "$scenario" in
        1) scenario_hot ;;
        2) scenario_rate ;;
        3) scenario_search ;;
        4) scenario_miss ;;
        5) scenario_memory ;;
        6) scenario_pair ;;
    esac
done
