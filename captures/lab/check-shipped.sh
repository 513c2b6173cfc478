#!/bin/bash
# Offline checks, no root needed: the scrubber's unit test, then pcapcheck.py
# over every lab scenario shipped in captures/.  Ends with "N passed, M failed".
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY=/usr/bin/python3; [ -x "$PY" ] || PY=python3
P=0; F=0
tally() { local line; line="$(tail -1 "$1")"; P=$((P + $(echo "$line" | awk '{print $1}'))); F=$((F + $(echo "$line" | awk '{print $3}'))); }
T="$(mktemp)"; trap 'rm -f "$T"' EXIT
echo "== scrub unit test"
"$PY" "$HERE/test_scrub.py" | tee "$T" | sed '$d'; tally "$T"
for d in "$HERE"/../*/; do
    { [ -f "$d/truth.jsonl" ] || [ -f "$d/truth.jsonl.gz" ]; } && [ -f "$d/scenario.json" ] || continue
    echo "== $(basename "$d")"
    "$PY" "$HERE/pcapcheck.py" "$d" | tee "$T" | sed '$d'; tally "$T"
done
echo "$P passed, $F failed"
[ "$F" -eq 0 ] && [ "$P" -gt 0 ]
