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
# shellcheck source=common.sh
. "$HERE/common.sh"
scenario="$1"; shift
SECONDS=0
rc=0
"$PY" "$HERE/lab.py" run "$scenario" "$@" &
CHILD=$!
wait "$CHILD" || rc=$?
CHILD=""
echo "run-scenario $scenario: ${SECONDS} s, exit $rc" >&2
exit $rc
