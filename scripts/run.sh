#!/usr/bin/env bash
# The main job: set up, build, and print the request paths of every capture set shipped
# in captures/ (one directory per scenario, one capture per host).
# Usage: scripts/run.sh [extra flowtrace pcap options, e.g. --format json, --svg out/]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --quiet
shopt -s nullglob
status=0
for dir in captures/*/; do
  case "$dir" in captures/lab/|captures/broken/) continue ;; esac
  files=( "$dir"*.pcap "$dir"*.pcapng "$dir"*.pcap.gz "$dir"*.pcapng.gz )
  [ ${#files[@]} -eq 0 ] && continue
  echo "== ${dir%/}: ${files[*]}"
  ./target/release/flowtrace pcap --paths "${files[@]}" "$@" || status=$?
done
exit $status
