#!/bin/bash
# Live self-test of `flowtrace live` in the lab: run a small scenario (40 requests,
# concurrency 4, keep-alive, mixed URLs) with `flowtrace live` on server A
# (--live-on A) into a temp dir, then check it with livecheck.py: live exited 0
# with no drops; its paths equal `flowtrace pcap --paths` on the pcapng it wrote;
# >= 95 % of the truth requests through A's gateway are among its paths.
# One line per check, "N passed, M failed", non-zero exit on any failure.
# Namespaces, PIDs and the temp dir are cleaned up also on failure (KEEP=1 keeps it).
# Binary: $FLOWTRACE_BIN or <repo>/target/release/flowtrace.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ "$(id -u)" != 0 ]; then echo "FAIL live-selftest.sh needs root (network namespaces)"; echo "0 passed, 1 failed"; exit 1; fi
BIN="${FLOWTRACE_BIN:-$(cd "$HERE/../.." && pwd)/target/release/flowtrace}"
if [ ! -x "$BIN" ]; then echo "FAIL flowtrace binary $BIN missing (cargo build --release, or FLOWTRACE_BIN)"; echo "0 passed, 1 failed"; exit 1; fi
export FLOWTRACE_BIN="$BIN"
TMP="$(mktemp -d /tmp/ftlab-live-selftest.XXXXXX)"
lab_cleanup_extra() { [ -n "${KEEP:-}" ] || rm -rf "$TMP"; }
# shellcheck source=common.sh
. "$HERE/common.sh"
timeout 150 "$PY" "$HERE/lab.py" run selftest --count 40 --concurrency 4 --live-on A \
    --out "$TMP/out" --run-dir "$TMP/run" >"$TMP/run.log" 2>&1 &
CHILD=$!
rc=0; wait "$CHILD" || rc=$?
CHILD=""
p=0; f=0
if [ "$rc" = 0 ]; then
    echo "PASS lab scenario with --live-on A ran ($(grep -o 'done in [0-9.]*s' "$TMP/run.log"))"; p=1
else
    echo "FAIL lab scenario with --live-on A: exit $rc - log tail:"
    tail -15 "$TMP/run.log" | sed 's/^/    /'; f=1
    if [ ! -e "$TMP/run/live-A.result.json" ] || [ ! -e "$TMP/out/truth.jsonl" ]; then
        echo "$p passed, $f failed"; exit 1
    fi
fi
[ -n "${KEEP:-}" ] && echo "     (kept: $TMP)"
"$PY" "$HERE/livecheck.py" "$TMP/run" "$TMP/out" --host A --flowtrace "$BIN" | awk -v p0="$p" -v f0="$f" '
    /^[0-9]+ passed, [0-9]+ failed$/ { p=$1; f=$3; next }  { print }
    END { printf "%d passed, %d failed\n", p+p0, f+f0; exit (f+f0>0 || p+p0<2) }'
