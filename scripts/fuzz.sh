#!/usr/bin/env bash
# Short fuzzing run of every cargo-fuzz target (docs/fuzzing.md).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Runs each target (all five by default) for SECONDS (default 30) with one libFuzzer
# process at low priority, after building the seed corpora in fuzz/corpus/ from
# captures/ and ../shared/pcaps (when present). Exits 0 when every target ran
# clean, 1 when one found a crash, timeout or out-of-memory (its input is in
# fuzz/artifacts/TARGET/), and 0 with "skipped: ..." when the nightly toolchain or
# cargo-fuzz is missing, so CI can call it anywhere.
set -uo pipefail

cd "$(dirname "$0")/.."
secs="${1:-30}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(capture_file decode_frame tcp_reassembly http_parse correlate)
fi

has_nightly() {
    command -v cargo >/dev/null || return 1
    # Ask rustup first: `cargo +nightly` may try to install a missing toolchain.
    if command -v rustup >/dev/null; then
        rustup toolchain list | grep -q '^nightly' || return 1
    fi
    cargo +nightly --version >/dev/null 2>&1
}
if ! has_nightly; then
    echo "fuzz.sh: skipped: no nightly toolchain (rustup toolchain install nightly)"
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: skipped: cargo-fuzz is not installed (cargo install cargo-fuzz)"
    exit 0
fi
if ! command -v python3 >/dev/null; then
    echo "fuzz.sh: skipped: python3 is needed to build the seed corpora"
    exit 0
fi

seeds=(captures)
[ -d ../shared/pcaps ] && seeds+=(../shared/pcaps)
python3 scripts/fuzz_seeds.py fuzz/corpus "${seeds[@]}" || exit 2

nice -n 10 cargo +nightly fuzz build -O || exit 2

dict_of() {
    case "$1" in
        capture_file | decode_frame) echo "-dict=fuzz/dict/pcapng.dict" ;;
        tcp_reassembly | http_parse) echo "-dict=fuzz/dict/http.dict" ;;
    esac
}

failed=()
for t in "${targets[@]}"; do
    echo "fuzz.sh: $t for ${secs}s"
    # shellcheck disable=SC2046
    if ! nice -n 19 cargo +nightly fuzz run -O "$t" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 \
        $(dict_of "$t") \
        -print_final_stats=1; then
        failed+=("$t")
    fi
done
if [ ${#failed[@]} -ne 0 ]; then
    echo "fuzz.sh: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)"
    exit 1
fi
echo "fuzz.sh: ok: ${targets[*]} ran ${secs}s each without a finding"
