#!/bin/bash
# Lab self-test: run the small `selftest` scenario live into a temp dir, then
# check the captures against the truth (pcapcheck.py).  Prints one line per
# check, ends with "N passed, M failed", exits non-zero on any failure.
# Cleans up namespaces and PIDs (and the temp dir) also on failure.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ "$(id -u)" != 0 ]; then echo "selftest.sh: needs root (network namespaces)"; echo "0 passed, 1 failed"; exit 1; fi
TMP="$(mktemp -d /tmp/ftlab-selftest.XXXXXX)"
lab_cleanup_extra() { [ -n "${KEEP:-}" ] || rm -rf "$TMP"; }
# shellcheck source=common.sh
. "$HERE/common.sh"
timeout 150 "$PY" "$HERE/lab.py" run selftest --out "$TMP/out" --run-dir "$TMP/run" >"$TMP/run.log" 2>&1 &
CHILD=$!
rc=0; wait "$CHILD" || rc=$?
CHILD=""
if [ "$rc" != 0 ]; then
    echo "FAIL live selftest scenario ran - see log below"
    tail -20 "$TMP/run.log" | sed 's/^/    /'
    echo "0 passed, 1 failed"
    exit 1
fi
echo "PASS live selftest scenario ran ($(grep -o 'done in [0-9.]*s' "$TMP/run.log"))"
"$PY" "$HERE/pcapcheck.py" "$TMP/out" | awk '
    /^[0-9]+ passed, [0-9]+ failed$/ { p=$1+1; f=$3; next }  { print }
    END { printf "%d passed, %d failed\n", p, f; exit (f>0 || p<2) }'
