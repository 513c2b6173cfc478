#!/bin/bash
# Soak `flowtrace live` in the lab:  captures/lab/live-soak.sh [SECONDS=60]
# Runs the `soak` scenario (concurrency 64, client keep-alive, unpaced = the highest
# rate the lab sustains; requests issued for SECONDS, at most 1,000,000) with
# `flowtrace live` on server A (--live-on A), no truth/scrubbing (--no-truth).
# flowtrace's CPU % and RSS are sampled every second by PID (/proc/<pid>/stat and
# /proc/<pid>/status).  Writes a JSON report to stdout and <run>/soak.json
# (<run> = /tmp/ftlab-soak.XXXXXX/run, printed at the end; the big raw captures in it
# are deleted unless KEEP=1).  Binary: $FLOWTRACE_BIN or <repo>/target/release/flowtrace.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SECS="${1:-60}"
case "$SECS" in ''|*[!0-9]*) echo "usage: $0 [SECONDS (1..585)]" >&2; exit 2;; esac
if [ "$SECS" -lt 1 ] || [ "$SECS" -gt 585 ]; then echo "SECONDS must be 1..585" >&2; exit 2; fi
if [ "$(id -u)" != 0 ]; then echo "live-soak.sh: needs root (network namespaces)" >&2; exit 2; fi
BIN="${FLOWTRACE_BIN:-$(cd "$HERE/../.." && pwd)/target/release/flowtrace}"
if [ ! -x "$BIN" ]; then echo "live-soak.sh: flowtrace binary $BIN missing (cargo build --release, or FLOWTRACE_BIN)" >&2; exit 2; fi
export FLOWTRACE_BIN="$BIN"
TMP="$(mktemp -d /tmp/ftlab-soak.XXXXXX)"
RUN="$TMP/run"
SAMPLER=""
# the raw captures are large (hundreds of MB a minute): kept only with KEEP=1
lab_cleanup_extra() { [ -n "${KEEP:-}" ] || rm -f "$RUN"/pcap/*.pcap "$RUN/live-A.pcapng"; }
# shellcheck source=common.sh
. "$HERE/common.sh"
# RATE=N limits the traffic to N requests/s (default: as fast as the lab goes).
timeout $((SECS + 400)) "$PY" "$HERE/lab.py" run soak --duration "$SECS" --live-on A --no-truth ${RATE:+--rate "$RATE"} \
    --out "$TMP/out" --run-dir "$RUN" >"$TMP/run.log" 2>&1 &
CHILD=$!
# the run dir is created by lab.py; sample flowtrace by the PID it records there
timeout $((SECS + 300)) "$PY" "$HERE/livesoak.py" sample "$RUN/live-A.pid" "$TMP/samples.jsonl" \
    --max-seconds $((SECS + 280)) 2>>"$TMP/sampler.log" &
SAMPLER=$!
rc=0; wait "$CHILD" || rc=$?
CHILD=""
# flowtrace has exited by now (lab.py stops it before it ends): the sampler ends by itself;
# if the pid file never appeared it would wait, so stop it by its PID
for _ in $(seq 1 10); do kill -0 "$SAMPLER" 2>/dev/null || break; sleep 0.5; done
kill -TERM "$SAMPLER" 2>/dev/null || true
wait "$SAMPLER" 2>/dev/null; SAMPLER=""
echo "lab.py exit $rc; log: $TMP/run.log" >&2
tail -6 "$TMP/run.log" >&2
if [ ! -e "$TMP/out/scenario.json" ]; then echo "live-soak.sh: the soak run failed (no scenario.json)" >&2; exit 1; fi
cp "$TMP/samples.jsonl" "$RUN/soak-samples.jsonl" 2>/dev/null || true
"$PY" "$HERE/livesoak.py" report "$RUN" "$TMP/out" "$RUN/soak-samples.jsonl" --host A || rc=1
echo "report: $RUN/soak.json" >&2
exit $rc
