#!/bin/bash
# Issue 15's demonstration: `flowtrace agent` in server A's and B's namespaces,
# nats-server and `flowtrace collect` in the router's, 60 s of traffic at 200 req/s
# (real-seed-600's mix); during it the collector is killed (SIGKILL) and started
# again, nats-server restarted, agent B restarted. natscheck.py then compares the
# collector's paths with `flowtrace pcap --paths` over the agents' own -w captures
# (leaving out agent B's outage). Root; ~2 min. Namespaces, PIDs and the temp dir are
# cleaned up also on failure (KEEP=1 keeps the temp dir).
# Binary: $FLOWTRACE_BIN or <repo>/target/release/flowtrace.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ "$(id -u)" != 0 ]; then echo "FAIL nats-demo.sh needs root (network namespaces)"; echo "0 passed, 1 failed"; exit 1; fi
BIN="${FLOWTRACE_BIN:-$(cd "$HERE/../.." && pwd)/target/release/flowtrace}"
export FLOWTRACE_BIN="$BIN"
SECONDS_="${1:-60}"
TMP="$(mktemp -d /tmp/ftlab-nats-demo.XXXXXX)"
lab_cleanup_extra() { [ -n "${KEEP:-}" ] || rm -rf "$TMP"; }
# shellcheck source=common.sh
. "$HERE/common.sh"
timeout 400 "$PY" "$HERE/lab.py" run real-seed-600 --agents --duration "$SECONDS_" \
    --count $((SECONDS_ * 200)) --worker-rate 200 --no-truth \
    --out "$TMP/out" --run-dir "$TMP/run" >"$TMP/run.log" 2>&1 &
CHILD=$!
rc=0; wait "$CHILD" || rc=$?
CHILD=""
if [ "$rc" != 0 ]; then
    echo "FAIL lab run with --agents: exit $rc - log tail:"; tail -15 "$TMP/run.log" | sed 's/^/    /'
    echo "0 passed, 1 failed"; exit 1
fi
grep -h "paths from" "$TMP"/run/collector-*.err | sed 's/^/     /'
[ -n "${KEEP:-}" ] && echo "     (kept: $TMP)"
"$PY" "$HERE/natscheck.py" "$TMP/run" --flowtrace "$BIN"
