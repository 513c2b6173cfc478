#!/bin/bash
# Run one lab scenario end to end: up, capture, traffic, down, truth, scrub.
#   captures/lab/run-scenario.sh <scenario> [--out DIR] [--no-offload] [--userland-proxy] ...
#   captures/lab/run-scenario.sh list
# Output: captures/<scenario>/ (pcap.gz, links.json, truth.jsonl, scenario.json).
# Teardown (stop tracked PIDs, delete ftlab-* namespaces) always runs.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY=/usr/bin/python3; [ -x "$PY" ] || PY=python3
if [ "${1:-}" = "" ] || [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
    sed -n '2,6p' "$0"; exec "$PY" "$HERE/lab.py" list
fi
if [ "$1" = "list" ]; then exec "$PY" "$HERE/lab.py" list; fi
if [ "$(id -u)" != 0 ]; then echo "run as root" >&2; exit 2; fi
cleanup() { "$PY" "$HERE/lab.py" down >/dev/null 2>&1 || true; }
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
scenario="$1"; shift
start=$(date +%s.%N)
rc=0
"$PY" "$HERE/lab.py" run "$scenario" "$@" || rc=$?
printf 'run-scenario %s: %.1f s\n' "$scenario" "$(echo "$(date +%s.%N) - $start" | bc 2>/dev/null || echo 0)" >&2
exit $rc
