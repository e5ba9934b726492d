#!/usr/bin/env bash
# Everything CI checks, on a fresh machine: installs what the tests need, then runs formatting,
# lints and the whole test suite. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use (real peers and tools); installed only when missing.
packages=()
need() { command -v "$1" >/dev/null 2>&1 || packages+=("$2"); }
need ip iproute2
if [ "${#packages[@]}" -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
    else
        echo "missing packages (run as root to install): ${packages[*]}" >&2
    fi
fi

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked
