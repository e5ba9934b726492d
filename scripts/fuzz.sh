#!/usr/bin/env bash
# Runs the cargo-fuzz (libFuzzer) targets of fuzz/ (docs/design.md, targets), each for a given time.
#
#   scripts/fuzz.sh TARGET|all SECONDS [LIBFUZZER_ARGS...]
#   scripts/fuzz.sh list
#
# Targets: query_parse, answer_inspect, cache_write, tcp_frames, corefile, yaml_config.
# The corpus kept in the repo (fuzz/corpus/TARGET) is read and grown in a scratch copy, so a
# run leaves the repo as it was; new inputs worth keeping are merged back by hand with
# `cargo fuzz cmin`. Crashes are written to fuzz/artifacts/TARGET/ and make the script fail:
# reproduce one with `cargo +nightly fuzz run TARGET fuzz/artifacts/TARGET/crash-...`, fix it,
# and add it as a case in tests/fuzz_regressions.rs.
#
# Needs cargo-fuzz (installed when missing) and a nightly compiler for libFuzzer's -Z flags:
# rustup's nightly with AddressSanitizer when there is one, else the stable compiler with
# RUSTC_BOOTSTRAP=1 and no sanitizer (the code under test is safe Rust: bounds and overflow
# checks, on in fuzz/Cargo.toml, are what catch its bugs). The first build takes ~20 minutes
# on 2 cores (every dependency instrumented); later ones only rebuild this crate.
#
# Environment: FUZZ_TARGET_DIR [/work/fuzz-target or fuzz/target]: the fuzz build's own target
# directory (its flags differ from the main build's, so sharing one would rebuild both), and
# JOBS [1]: libFuzzer processes per target.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=(query_parse answer_inspect cache_write tcp_frames corefile yaml_config)
usage() { sed -n '2,6s/^# \{0,1\}//p' "$0" >&2; exit 2; }

[ "${1:-}" = list ] && { printf '%s\n' "${TARGETS[@]}"; exit 0; }
[ $# -ge 2 ] || usage
target=$1 seconds=$2
shift 2
if [ "$target" = all ]; then
    selected=("${TARGETS[@]}")
else
    printf '%s\n' "${TARGETS[@]}" | grep -qx "$target" || usage
    selected=("$target")
fi

command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
# AddressSanitizer with rustup's nightly; without one, the stable compiler accepts -Z flags under
# RUSTC_BOOTSTRAP=1 but may lack the sanitizer runtime, so that build has none.
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    build=(cargo +nightly fuzz)
    sanitizer=address
else
    export RUSTC_BOOTSTRAP=1
    build=(cargo fuzz)
    sanitizer=none
fi
default_dir=fuzz/target
[ -d /work ] && default_dir=/work/fuzz-target
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$default_dir}
jobs=()
[ "${JOBS:-1}" -gt 1 ] && jobs=(-fork="$JOBS")

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
status=0
for t in "${selected[@]}"; do
    mkdir -p "$scratch/$t" "fuzz/artifacts/$t"
    echo "== $t: ${seconds}s (sanitizer $sanitizer)" >&2
    # New inputs go to the first corpus directory (scratch); the repo's is only read.
    set +e
    "${build[@]}" run --sanitizer "$sanitizer" -O "$t" "$scratch/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -artifact_prefix="fuzz/artifacts/$t/" -print_final_stats=1 \
        "${jobs[@]}" "$@" >"$scratch/$t.log" 2>&1
    code=$?
    set -e
    # libFuzzer's summary: executions, coverage, corpus size.
    grep -E '^(#[0-9]+[[:space:]]+(INITED|DONE)|Done [0-9]+ runs|stat::number_of_executed_units|stat::peak_rss_mb)' \
        "$scratch/$t.log" || true
    if [ "$code" -ne 0 ]; then
        echo "== $t: CRASH (exit $code), input in fuzz/artifacts/$t/" >&2
        grep -A4 -m1 'panicked at' "$scratch/$t.log" >&2 || true
        grep -A2 'Failing input' "$scratch/$t.log" >&2 || grep -v '^#[0-9]' "$scratch/$t.log" | tail -20 >&2
        status=1
    fi
done
exit "$status"
