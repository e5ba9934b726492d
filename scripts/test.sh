#!/usr/bin/env bash
# Everything CI checks, on a fresh machine: installs what the tests need, then runs formatting,
# lints and the whole test suite. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use (real peers and tools); installed only when missing.
packages=()
need() { command -v "$1" >/dev/null 2>&1 || packages+=("$2"); }
need ip iproute2
# tests/node.rs: rules read back in network namespaces, a real dnsmasq upstream there, and
# python3 as the DNS client inside the namespace.
need iptables iptables
# tests/node.rs and tests/fail_open.rs: the nftables backend, and kube-proxy stand-ins.
need nft nftables
# tests/fail_open.rs: the conntrack entries a failure message lists.
need conntrack conntrack
need dnsmasq dnsmasq-base
need python3 python3
# tests/dot.rs: unbound as the DNS-over-TLS upstream, and openssl for its test CA and certificate.
need unbound unbound
need openssl openssl
# tests/resolvers.rs: real stub resolvers in pod namespaces, built at run time: glibc's (cc),
# musl's (musl-gcc) and Go's pure resolver (go).
need cc gcc
need musl-gcc musl-tools
need go golang-go
# tests/deploy.rs validates deploy/ with kubernetes-validate, installed below into a venv.
python3 -c 'import ensurepip' 2>/dev/null || packages+=(python3-venv)
if [ "${#packages[@]}" -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
    else
        echo "missing packages (run as root to install): ${packages[*]}" >&2
    fi
fi

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings

# Dependency policy (deny.toml): licenses, sources, bans, and RustSec advisories. The advisory
# database is a git clone from GitHub; where only the package registries are reachable it cannot
# be fetched, and that check is skipped with a message rather than failing every run.
command -v cargo-deny >/dev/null 2>&1 || cargo install cargo-deny --locked --quiet
if cargo deny fetch db >/dev/null 2>&1; then
    cargo deny --locked check
else
    echo "cargo deny: the RustSec advisory database cannot be fetched here; advisories NOT checked" >&2
    cargo deny --locked check bans licenses sources
fi

# tests/deploy.rs validates the manifests against the Kubernetes API's schemas with
# kubernetes-validate (PyPI; the schemas ship inside it, so validation needs no network and no
# cluster): installed once into a venv under target/, and named to the test here.
validator=target/kubernetes-validate
if ! [ -x "$validator/bin/kubernetes-validate" ]; then
    python3 -m venv "$validator"
    "$validator/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate==1.37.0
fi
export KUBERNETES_VALIDATE="$PWD/$validator/bin/kubernetes-validate"

# cargo prints one "test result:" line per test binary, the doc tests (often none) last; the line
# after them adds them all up, so the run ends on the whole suite's count.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --locked 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { passed += $4; failed += $6; ignored += $8 }
     END { printf "tests: %d passed, %d failed, %d skipped\n", passed, failed, ignored }' "$log"
exit "$status"
