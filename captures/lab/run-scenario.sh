#!/bin/bash
# Run one lab scenario end to end: up, capture, traffic, down, truth, scrub.
#   captures/lab/run-scenario.sh <scenario> [--out DIR] [--no-offload] [--userland-proxy] [--live-on A] ...
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
CHILD=""
cleanup() {
    # stop lab.py by its PID first (it tears down itself), then make sure
    if [ -n "$CHILD" ] && kill -0 "$CHILD" 2>/dev/null; then
        kill -TERM "$CHILD" 2>/dev/null || true
        for _ in $(seq 1 60); do kill -0 "$CHILD" 2>/dev/null || break; sleep 0.5; done
    fi
    "$PY" "$HERE/lab.py" down >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'cleanup; trap - EXIT; exit 130' INT
trap 'cleanup; trap - EXIT; exit 143' TERM
scenario="$1"; shift
SECONDS=0
rc=0
"$PY" "$HERE/lab.py" run "$scenario" "$@" &
CHILD=$!
wait "$CHILD" || rc=$?
CHILD=""
echo "run-scenario $scenario: ${SECONDS} s, exit $rc" >&2
exit $rc
