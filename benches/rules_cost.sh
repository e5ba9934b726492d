#!/usr/bin/env bash
# What the kernel charges per cache hit for our node rules (fail-open: the raw PREROUTING NOTRACK
# rules carry the socket match, so every packet to the local IP costs a socket lookup). One command:
#
#   benches/rules_cost.sh
#
# Builds nodelocal-dns in release, then builds a node and a pod in two network namespaces joined
# by a veth (pod 10.244.0.5 -> node 10.244.0.1), the local IP 169.254.20.10 on the node's lo. In
# the node: a dnsmasq upstream on 127.0.0.1:5353 answering a fixed set of names, and our forwarder
# on 169.254.20.10:53 (pinned to CPU 0, one worker, cache on, started once and warmed). In the
# pod: dnsperf pinned to CPU 1, asking the hot set (every answer a cache hit) at each rate for
# DURATION seconds, once per configuration, in ROUNDS rounds:
#
#   none               no rules at all (the node namespace's ruleset is empty: no netfilter hook)
#   iptables           `nodelocal-dns setup` with node.backend: iptables
#   nftables           `nodelocal-dns setup` with node.backend: nftables
#   iptables-nosocket  the iptables rules of `nodelocal-dns rules` without `-m socket --nowildcard`
#   nftables-nosocket  the nftables table of `nodelocal-dns rules` without `socket wildcard 0`
#   conntrack          no rules of ours, but kube-proxy's stand-in (a DNAT rule for another address),
#                      so conntrack is on and tracks the DNS flows: a real node without our rules
#
# The -nosocket pair are node-cache's unconditional NOTRACK rules: their distance from the plain
# pair is the socket match alone. `none` is the floor, `conntrack` what a node pays without us.
# Between points the rules are removed (`nodelocal-dns teardown`) and the node's ruleset flushed,
# so `none` runs with no hook left behind.
#
# Prints one markdown table and writes it to benches/results/<date>-rules-cost.md. Needs root,
# two CPUs, dnsperf and dnsmasq (installed with apt-get when missing), iptables and nft. All
# traffic stays inside the two namespaces it creates and removes.
#
# Environment (defaults in brackets):
#   DURATION [10]                         seconds per measured point
#   ROUNDS [3]                            rounds; the configurations take turns within each round
#   RATES ["20000 max"]                   dnsperf -Q rates; max: no -Q, dnsperf -c 8 -q 500 as fast as it can
#   CONFIGS ["none iptables nftables"]    configurations, among the six above
#   KEEP_WORK [0]                         1: keep the temporary directory (configs, logs, dnsperf output)
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$BENCH_DIR")
COMMAND_LINE="benches/rules_cost.sh $*"
for setting in CONFIGS RATES ROUNDS DURATION; do
    [ -n "${!setting:-}" ] && COMMAND_LINE="$setting=\"${!setting}\" $COMMAND_LINE"
done

usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; }
case "${1:-}" in
    "") ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
esac

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
RATES=${RATES:-"20000 max"}
read -r -a CONFIG_LIST <<<"${CONFIGS:-none iptables nftables}"
FORWARDER_CPU=0
LOAD_CPU=1
LOCAL_IP=169.254.20.10
POD_IP=10.244.0.5
NODE_IP=10.244.0.1
UPSTREAM=127.0.0.1:5353
# The hot set: NAMES names, each asked for A and AAAA (both exist, TTL 1 h: nothing expires).
NAMES=50

log() { printf '[rules-cost %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

for c in "${CONFIG_LIST[@]}"; do
    case "$c" in none | iptables | nftables | iptables-nosocket | nftables-nosocket | conntrack) ;;
        *) die "unknown configuration $c (known: none iptables nftables iptables-nosocket nftables-nosocket conntrack)" ;;
    esac
done
[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, rules)"
[ "$(nproc)" -ge 2 ] || die "needs two CPUs (forwarder on CPU $FORWARDER_CPU, dnsperf on CPU $LOAD_CPU)"

# ---------------------------------------------------------------- setup

install_packages() {
    local packages=()
    command -v dnsperf >/dev/null 2>&1 || packages+=(dnsperf)
    command -v dnsmasq >/dev/null 2>&1 || packages+=(dnsmasq-base)
    command -v iptables >/dev/null 2>&1 || packages+=(iptables)
    command -v nft >/dev/null 2>&1 || packages+=(nftables)
    command -v conntrack >/dev/null 2>&1 || packages+=(conntrack)
    [ "${#packages[@]}" -eq 0 ] && return
    log "installing ${packages[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
}

build() {
    log "building nodelocal-dns (release)"
    (cd "$REPO" && cargo build --release --locked --bin nodelocal-dns >&2)
    # A copy: another build on a shared target directory must not swap the binary mid-run.
    mkdir -p "$WORK/bin"
    cp "${CARGO_TARGET_DIR:-$REPO/target}/release/nodelocal-dns" "$WORK/bin/nodelocal-dns"
    OURS=$WORK/bin/nodelocal-dns
}

STARTED=()
NETNS=()
cleanup() {
    local pid ns
    for pid in "${STARTED[@]+"${STARTED[@]}"}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${STARTED[@]+"${STARTED[@]}"}"; do wait "$pid" 2>/dev/null || true; done
    # Deleting a namespace removes its veth end, its addresses and its rules.
    for ns in "${NETNS[@]+"${NETNS[@]}"}"; do ip netns del "$ns" 2>/dev/null || true; done
    if [ "${KEEP_WORK:-0}" = 1 ]; then
        log "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}

in_node() { ip netns exec "$NODE" "$@"; }
in_pod() { ip netns exec "$POD" "$@"; }

# The layout of tests/common/cluster.rs, reduced to a node and one pod. The kernel may have no
# dummy driver: the local IP lives on the node's lo.
make_namespaces() {
    NODE=rcost-node-$$
    POD=rcost-pod-$$
    ip netns add "$NODE" && NETNS+=("$NODE")
    ip netns add "$POD" && NETNS+=("$POD")
    in_node ip link set lo up
    in_pod ip link set lo up
    in_node ip link add vpod type veth peer name eth0 netns "$POD"
    in_node ip addr add "$NODE_IP/24" dev vpod
    in_node ip link set vpod up
    in_node ip addr add "$LOCAL_IP/32" dev lo
    in_pod ip addr add "$POD_IP/24" dev eth0
    in_pod ip link set eth0 up
    in_pod ip route add default via "$NODE_IP"
}

# start NAME COMMAND...: COMMAND in the background, logging to $WORK/NAME.log; sets PID. `ip netns
# exec` and taskset both exec, so PID is the program's own.
start() {
    local name=$1
    shift
    "$@" >>"$WORK/$name.log" 2>&1 &
    PID=$!
    STARTED+=("$PID")
}

start_upstream() {
    local records=() i
    for ((i = 1; i <= NAMES; i++)); do
        records+=("--host-record=svc-$i.bench.test,10.0.$((i / 250)).$((i % 250 + 1)),fd00::$i,3600")
        printf 'svc-%d.bench.test A\nsvc-%d.bench.test AAAA\n' "$i" "$i" >>"$WORK/hot.txt"
    done
    start dnsmasq ip netns exec "$NODE" dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts \
        --bind-interfaces --listen-address="${UPSTREAM%:*}" --port="${UPSTREAM#*:}" \
        --pid-file= --user=root --log-facility=- "${records[@]}"
}

# forwarder_config BACKEND|- SETUP: our config; SETUP true for the files `setup`/`teardown` read.
# The running forwarder installs nothing itself (setup_iptables: false): the rules come and go
# around it, so every configuration meets the same process with the same warm cache.
forwarder_config() {
    cat <<EOF
listen: ["$LOCAL_IP:53"]
workers: 1
server:
  loop_check: false
metrics:
  listen: "127.0.0.1:9253"
cache:
  capacity: 10000
zones:
  - name: .
    upstreams: ["$UPSTREAM"]
    cache:
      success_ttl: 1h
node:
  setup_interface: false
  setup_iptables: $2
  local_ips: [$LOCAL_IP]
EOF
    # check-config refuses a backend with no rules to write.
    [ "$2" = false ] || echo "  backend: $1"
}

start_forwarder() {
    forwarder_config - false >"$WORK/run.yaml"
    forwarder_config iptables true >"$WORK/iptables.yaml"
    forwarder_config nftables true >"$WORK/nftables.yaml"
    local f
    for f in run iptables nftables; do
        "$OURS" check-config "$WORK/$f.yaml" >/dev/null 2>&1 ||
            die "check-config rejected $WORK/$f.yaml: $("$OURS" check-config "$WORK/$f.yaml" 2>&1)"
    done
    start forwarder ip netns exec "$NODE" taskset -c "$FORWARDER_CPU" "$OURS" run --config "$WORK/run.yaml" --log-level warn
    FORWARDER_PID=$PID
    local i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$FORWARDER_PID" 2>/dev/null || { tail -20 "$WORK/forwarder.log" >&2; die "the forwarder exited"; }
        if in_pod dnsperf -s "$LOCAL_IP" -p 53 -d "$WORK/hot.txt" -n 1 -t 1 >"$WORK/warm.out" 2>&1 &&
            [ "$(dp_completed "$WORK/warm.out")" = "$((2 * NAMES))" ] &&
            [ "$(dp_rcode "$WORK/warm.out" NOERROR)" = "$((2 * NAMES))" ]; then
            # Its CPU is read from /proc/PID: the PID must be the forwarder's, not a wrapper's.
            [ "$(cat "/proc/$FORWARDER_PID/comm")" = nodelocal-dns ] ||
                die "pid $FORWARDER_PID is $(cat "/proc/$FORWARDER_PID/comm"), not the forwarder"
            return 0
        fi
        sleep 0.2
    done
    cat "$WORK/warm.out" >&2
    die "the forwarder did not answer the hot set from the pod"
}

# ---------------------------------------------------------------- rules

# apply CONFIG: installs the configuration's rules in the node namespace.
apply() {
    case "$1" in
        none) ;;
        iptables | nftables)
            in_node "$OURS" setup --config "$WORK/$1.yaml" >>"$WORK/setup.log" 2>&1 ||
                { tail -20 "$WORK/setup.log" >&2; die "nodelocal-dns setup ($1) failed"; }
            ;;
        iptables-nosocket)
            # The output of `rules` is a shell script (iptables-restore and iptables commands).
            "$OURS" rules --config "$WORK/iptables.yaml" | sed 's/ -m socket --nowildcard//' >"$WORK/$1.sh"
            grep -q -- '-m socket' "$WORK/$1.sh" && die "the socket match is still in $WORK/$1.sh"
            in_node bash -e "$WORK/$1.sh" >>"$WORK/setup.log" 2>&1 || die "$WORK/$1.sh failed"
            ;;
        nftables-nosocket)
            "$OURS" rules --config "$WORK/nftables.yaml" | sed 's/ socket wildcard 0//' >"$WORK/$1.nft"
            grep -q 'socket' "$WORK/$1.nft" && die "the socket match is still in $WORK/$1.nft"
            in_node nft -f "$WORK/$1.nft" || die "nft -f $WORK/$1.nft failed"
            ;;
        conntrack) kube_proxy ;;
    esac
    if [ "$1" = none ]; then
        [ -z "$(ruleset)" ] || die "the node's ruleset is not empty for 'none'"
    else
        [ -n "$(ruleset)" ] || die "no rules in the node after installing $1"
    fi
}

# kube-proxy's stand-in: the DNAT of a kube-dns ClusterIP that none of our traffic goes to. A nat
# rule turns conntrack on for the namespace (an empty nat chain, like our fallback's, does not),
# and conntrack then tracks every flow that no NOTRACK rule exempts.
kube_proxy() {
    printf 'table ip kube-proxy {\n\tchain nat-prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t\tip daddr 10.96.0.10 udp dport 53 dnat to 10.244.1.2\n\t}\n}\n' \
        >"$WORK/kube-proxy.nft"
    in_node nft -f "$WORK/kube-proxy.nft" || die "nft -f $WORK/kube-proxy.nft failed"
}

# The node's ruleset (nft warns on stderr about iptables-nft's tables).
ruleset() { in_node nft list ruleset 2>/dev/null; }

# remove CONFIG: our teardown where it applies, then an empty ruleset (iptables-nft leaves empty
# base chains behind, whose hooks would still be walked, and a nat table keeps conntrack on).
remove() {
    case "$1" in
        iptables | nftables)
            in_node "$OURS" teardown --config "$WORK/$1.yaml" >>"$WORK/setup.log" 2>&1 ||
                { tail -20 "$WORK/setup.log" >&2; die "nodelocal-dns teardown ($1) failed"; }
            ;;
    esac
    in_node nft flush ruleset
    # Entries left by `conntrack` (or the check below) cost nothing once the hooks are gone, but
    # the next check must not count them.
    in_node conntrack -F >/dev/null 2>&1 || true
}

# Conntrack entries for the local IP.
tracked_flows() { in_node conntrack -L -d "$LOCAL_IP" 2>/dev/null | grep -c . || true; }

# check_rules_match CONFIG: whether CONFIG's NOTRACK rules match the pod's queries and our answers
# here. Only with conntrack on does a miss show (a tracked flow), and the measured points run
# without it (kube-proxy's stand-in only in `conntrack`), so this is checked once, before them,
# with the stand-in beside the rules; `conntrack` itself is checked to track after each point.
check_rules_match() {
    apply "$1"
    kube_proxy
    in_pod dnsperf -s "$LOCAL_IP" -p 53 -d "$WORK/hot.txt" -n 1 -t 1 >"$WORK/check.out" 2>&1 || true
    local tracked
    tracked=$(tracked_flows)
    [ "$(dp_completed "$WORK/check.out")" = "$((2 * NAMES))" ] || die "$1: the pod's queries went unanswered"
    if [ "$1" = conntrack ] || [ "$1" = none ]; then
        [ "$tracked" -gt 0 ] || die "$1: conntrack is on but tracked no DNS flow"
    else
        [ "$tracked" = 0 ] || die "$1: $tracked conntrack entries for $LOCAL_IP: the NOTRACK rules did not match"
    fi
    remove "$1"
}

# ---------------------------------------------------------------- measures

# dp_sent, dp_completed, dp_lost, dp_qps, dp_avg_ms, dp_rcode
# shellcheck source=benches/dnsperf.sh
. "$BENCH_DIR/dnsperf.sh"

cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
# The ksoftirqd threads: softirq work the kernel defers to them is charged to no process of ours.
ksoftirqd_ticks() {
    local pid n=0
    for pid in $(ps -eo pid=,comm= | awk '$2 ~ /^ksoftirqd\// {print $1}'); do n=$((n + $(cpu_ticks "$pid"))); done
    echo "$n"
}
# The machine's `cpu` line of /proc/stat (USER_HZ ticks): busy (user+nice+system+irq+softirq),
# system+irq+softirq, steal.
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8, $4 + $7 + $8, $9}' /proc/stat; }
# Bash's `times` line for children ("0m1.250s 0m0.310s") as ticks of user+system.
children_ticks() { awk -v hz="$CLK_TCK" '{n = 0; for (i = 1; i <= 2; i++) {split($i, t, /[ms]/); n += t[1] * 60 + t[2]} printf "%.0f", n * hz}'; }
# Queries the forwarder sent upstream so far (coredns_forward_requests_total, all upstreams).
upstream_queries() {
    in_node curl -s --max-time 2 http://127.0.0.1:9253/metrics |
        awk '/^coredns_forward_requests_total/ {n += $NF} END {print n + 0}'
}

per_query() { awk -v t="$1" -v q="$2" -v hz="$CLK_TCK" 'BEGIN {if (q > 0) printf "%.2f", t * 1e6 / hz / q; else print "-"}'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", 100 * a / b; else print "-"}'; }
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
figure() {
    if [ "$#" -eq 1 ]; then echo "$1"; return; fi
    printf '%s (%s)' "$(median "$@")" "$(printf '%s\n' "$@" | sort -g | awk 'NR == 1 {lo = $1} {hi = $1} END {print lo "–" hi}')"
}

# point CONFIG RATE ROUND: one measured point; appends each figure to the round lists of
# CONFIG|RATE. Per-process CPU (the forwarder, dnsperf, ksoftirqd) is what the figures stand on:
# whatever else runs on the machine meanwhile (a build) lands in the machine-wide counters only.
point() {
    local config=$1 rate=$2 key="$1|$2" dp="$WORK/$1-$2-r$3.dp"
    local rate_args=(-Q "$rate")
    [ "$rate" = max ] && rate_args=()
    apply "$config"
    sleep 1
    local f0 k0 b0 m0 x0
    f0=$(cpu_ticks "$FORWARDER_PID")
    k0=$(ksoftirqd_ticks)
    read -r b0 m0 x0 < <(machine_ticks)
    # dnsperf's CPU is its rusage, from `times` in the subshell that waited for it (ip netns exec
    # and taskset exec, so the one child is dnsperf). The softirq work it runs inline (sending
    # into the veth runs the node's receive path, PREROUTING and the socket match, on its core)
    # is charged to it too.
    # (`times` into a file: in a pipeline it would run in a child of its own, with no children.)
    (in_pod taskset -c "$LOAD_CPU" dnsperf -s "$LOCAL_IP" -p 53 -d "$WORK/hot.txt" -l "$DURATION" \
        -c 8 -q 500 "${rate_args[@]}" >"$dp" 2>&1 && times >"$dp.times") || { cat "$dp" >&2; die "dnsperf failed"; }
    local load
    load=$(tail -1 "$dp.times" | children_ticks)
    local f1 k1 b1 m1 x1
    f1=$(cpu_ticks "$FORWARDER_PID")
    k1=$(ksoftirqd_ticks)
    read -r b1 m1 x1 < <(machine_ticks)
    if [ "$config" = conntrack ]; then
        [ "$(tracked_flows)" -gt 0 ] || die "conntrack: no DNS flow was tracked"
    fi
    remove "$config"
    kill -0 "$FORWARDER_PID" 2>/dev/null || { tail -20 "$WORK/forwarder.log" >&2; die "the forwarder exited"; }
    local done
    done=$(dp_completed "$dp")
    QPS[$key]+="$(dp_qps "$dp") "
    AVG[$key]+="$(dp_avg_ms "$dp" 3) "
    LOST[$key]+="$(pct "$(dp_lost "$dp")" "$(dp_sent "$dp")") "
    local path=$((f1 - f0 + load + k1 - k0))
    FWD[$key]+="$(per_query $((f1 - f0)) "$done") "
    LOAD[$key]+="$(per_query "$load" "$done") "
    PATH_CPU[$key]+="$(per_query "$path" "$done") "
    SYS[$key]+="$(per_query $((m1 - m0)) "$done") "
    OTHERS[$key]=$((${OTHERS[$key]:-0} + b1 - b0 - path))
    STEAL[$key]=$((${STEAL[$key]:-0} + x1 - x0))
    log "  $config @ $rate: $(dp_qps "$dp") QPS; µs/query: forwarder $(per_query $((f1 - f0)) "$done"), dnsperf $(per_query "$load" "$done"), path $(per_query "$path" "$done"), machine sys+softirq $(per_query $((m1 - m0)) "$done"); others $((b1 - b0 - path)) ticks, steal $((x1 - x0)) ticks"
}

# ---------------------------------------------------------------- report

ROWS=()
row() { ROWS+=("| $(IFS='|'; echo "$*" | sed 's/|/ | /g') |"); }
seconds() { awk -v t="$1" -v hz="$CLK_TCK" 'BEGIN {printf "%.1f", t / hz}'; }

# delta CONFIG BASE RATE: CONFIG's path CPU minus BASE's, round by round (the two ran a minute
# apart at most, so a drift of the VM's speed mostly cancels out): their median and range; "-"
# when BASE did not run.
delta() {
    [ "$1" != "$2" ] && [ -n "${PATH_CPU["$2|$3"]:-}" ] || { echo -; return; }
    local -a mine base
    read -r -a mine <<<"${PATH_CPU["$1|$3"]}"
    read -r -a base <<<"${PATH_CPU["$2|$3"]}"
    local i
    # shellcheck disable=SC2046 # one word per round
    figure $(for i in "${!mine[@]}"; do awk -v a="${mine[$i]}" -v b="${base[$i]}" 'BEGIN {printf "%+.2f ", a - b}'; done)
}

report() {
    local file="$BENCH_DIR/results/$STAMP-rules-cost.md" rate config
    for rate in $RATES; do
        for config in "${CONFIG_LIST[@]}"; do
            local key="$config|$rate" socket_delta=-
            case "$config" in iptables | nftables) socket_delta=$(delta "$config" "$config-nosocket" "$rate") ;; esac
            # shellcheck disable=SC2086 # the round lists split into words
            row "$config" "$rate" "$(figure ${QPS[$key]})" "$(median ${AVG[$key]})" "$(median ${LOST[$key]}) %" \
                "$(figure ${FWD[$key]})" "$(figure ${LOAD[$key]})" "$(figure ${PATH_CPU[$key]})" \
                "$(delta "$config" none "$rate")" "$socket_delta" \
                "$(figure ${SYS[$key]})" "$(seconds "${OTHERS[$key]}")" "$(seconds "${STEAL[$key]}")"
        done
    done
    {
        echo "## Node rules on the cache-hit path: the kernel's cost per query"
        echo
        echo "- command: \`$COMMAND_LINE\`"
        echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "- machine: $CPU_MODEL, $(nproc) cores, kernel $(uname -r)"
        echo "- versions: nodelocal-dns $(cd "$REPO" && git describe --always --dirty 2>/dev/null || echo unknown); $(dnsperf -h 2>&1 | grep -m1 Version | sed 's/Version/dnsperf/'); $(dnsmasq --version | head -1 | awk '{print "dnsmasq", $3}') (upstream); $(iptables --version); nftables $(nft --version | awk '{print $2}')"
        echo "- pod netns (10.244.0.5, dnsperf -c 8 -q 500 [-Q RATE] pinned to CPU $LOAD_CPU) -veth-> node netns (10.244.0.1; $LOCAL_IP on lo: nodelocal-dns, workers: 1, pinned to CPU $FORWARDER_CPU, one process for the whole run); $NAMES names x A and AAAA, every answer a cache hit after the warm-up (upstream queries during the measured points: $UPSTREAM_DURING); $DURATION s per point, $ROUNDS round(s), the configurations in turn (the order rotated each round): each figure is the median of the rounds, with the range"
        echo "- none: an empty ruleset in the node netns (no netfilter hook, no conntrack); iptables/nftables: \`nodelocal-dns setup\` with that node.backend (NOTRACK with the socket match in raw PREROUTING, NOTRACK and ACCEPT in output, the fallback's empty nat chain); *-nosocket: the same rules without the socket match (node-cache's); conntrack: none of ours, kube-proxy's stand-in (a DNAT rule for another address), so conntrack tracks the DNS flows (dnsperf keeps its 8 sockets: it looks 8 entries up, it does not create one per query as a pod's stub resolver would). Our fallback's nat chain is empty, which leaves conntrack off: only the conntrack row has it on. Checked before the points, with the stand-in beside each configuration: no DNS flow tracked but in conntrack and none"
        echo "- CPU per answered query: forwarder = its /proc/PID/stat utime+stime (its send path, the OUTPUT hook, and softirq that ran while it was on CPU $FORWARDER_CPU); dnsperf = its rusage (its sends run the node's receive path, PREROUTING and the socket match, in softirq on CPU $LOAD_CPU); path = forwarder + dnsperf + the ksoftirqd threads, everything the query costs (each process's total is its exact run time; only its user/system split is tick-sampled); Δ path vs none = path minus none's, round by round; socket match = path minus the same rules' without it (the -nosocket row), round by round. Machine sys+softirq = system+irq+softirq of both cores from /proc/stat, tick-sampled (HZ $(zcat /proc/config.gz 2>/dev/null | sed -n 's/^CONFIG_HZ=//p' || echo '?')), which is unreliable on cores that are idle much of the time (the fixed-rate rows), and it counts whatever else ran; others s = busy CPU time of /proc/stat minus the path's, summed over the rounds: sampling puts it off by a second or so either way, several seconds mean something else ran (a build, say)"
        echo "- CPU time stolen by the hypervisor during the run (both cores): $(seconds $(($(machine_ticks | awk '{print $3}') - STEAL_AT_START))) s"
        echo
        echo "| rules | offered QPS | achieved QPS | avg latency ms | lost | forwarder µs/query | dnsperf µs/query | path µs/query | Δ path vs none | socket match µs/query | machine sys+softirq µs/query | others s | steal s |"
        echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        printf '%s\n' "${ROWS[@]}"
    } | tee "$file"
    log "written $file"
}

# ---------------------------------------------------------------- main

WORK=$(mktemp -d /tmp/nodelocal-rules-cost.XXXXXX)
trap cleanup EXIT
trap 'exit 130' INT TERM
CLK_TCK=$(getconf CLK_TCK)
CPU_MODEL=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
STAMP=$(date +%Y-%m-%d-%H%M)

install_packages
build
make_namespaces
start_upstream
start_forwarder
log "forwarder pid $FORWARDER_PID in $NODE, warmed with $((2 * NAMES)) queries"
for config in "${CONFIG_LIST[@]}"; do check_rules_match "$config"; done
log "checked with conntrack on: ${CONFIG_LIST[*]}"

declare -A QPS=() AVG=() LOST=() FWD=() LOAD=() PATH_CPU=() SYS=() OTHERS=() STEAL=()
STEAL_AT_START=$(machine_ticks | awk '{print $3}')
UPSTREAM_AT_START=$(upstream_queries)
n=${#CONFIG_LIST[@]}
for ((r = 1; r <= ROUNDS; r++)); do
    for rate in $RATES; do
        log "round $r of $ROUNDS, rate $rate"
        for ((i = 0; i < n; i++)); do
            point "${CONFIG_LIST[$(((i + r - 1) % n))]}" "$rate" "$r"
        done
    done
done
UPSTREAM_DURING=$(($(upstream_queries) - UPSTREAM_AT_START))
report
